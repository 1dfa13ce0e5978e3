//! The record's fields, declared once: each field's JSON key and path, its kind, whether it is
//! required, how input treats it, the OTLP place that carries it and its index column.
//!
//! Everything that reads or writes a record takes names from here: the parsers (straight and
//! thorough), validation's error paths, the canonical writer, the OTLP mapping both ways, the
//! agent's protobuf encoding and the collector's index document. An output mapping (OTLP today,
//! OCSF or ECS for SIEM streams later) iterates [`Field::ALL`] and reads each field with
//! [`Field::value`]; adding a field is one row in the table below plus the arms the compiler
//! then asks for (`value` and the typed record itself).
//!
//! The metadata is `const` and the name lookups are generated `match`es, so the hot paths pay
//! no string search per record.

use crate::record::{AuditRecord, Change, Provenance};
use chrono::{DateTime, Utc};

/// The record fields that make up the hash chain, in byte order. The collector sets them; on
/// input they are ignored.
pub const CHAIN_FIELDS: [&str; 3] = [Field::Hash.key(), Field::PrevHash.key(), Field::Seq.key()];

/// Longest id (record, actor, target) accepted, in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Longest org id accepted, in bytes.
pub const MAX_ORG_ID_BYTES: usize = 64;

/// The objects of a record: the record itself and the objects nested in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Object {
    Record,
    Actor,
    Target,
    Metadata,
}

/// What a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Text,
    /// An identifier: non-empty, at most `max_bytes`, no control characters.
    Id { max_bytes: usize },
    /// A string from a closed set (the field's Rust enum: `ActorKind`, `TargetKind`, `Outcome`).
    Enum,
    /// An RFC 3339 time, kept with microsecond precision.
    Time,
    /// A whole number.
    Count,
    /// A nested object of the record ([`Object`]).
    Object(Object),
    /// The metadata's list of changes.
    Changes,
    /// Who wrote the record ([`Provenance`]).
    Provenance,
}

/// What happens to a field's value given in a record on the way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Read and checked.
    Read,
    /// Only type-checked, then derived from other fields (the category, from the action).
    Derived,
    /// Dropped whatever it says: the collector assigns it (the hash-chain fields).
    Dropped,
    /// Refused in a record an app writes: only the collector sets it (provenance).
    Refused,
}

/// Where a field travels in an OTLP LogRecord of the attributes style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Otlp {
    /// In the attribute of this name.
    Attribute(&'static str),
    /// As `time_unix_nano`.
    TimeUnixNano,
    /// As the body.
    Body,
    /// As an attribute under [`METADATA_PREFIX`](crate::otlp::METADATA_PREFIX), merged in key
    /// order with the free-form metadata keys.
    Metadata,
    /// Not sent; a record claiming it through this attribute (or its sub-keys) is refused.
    Refused(&'static str),
    /// Not sent (derived, or assigned by the collector).
    None,
}

/// A field's value in a record, for output mappings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue<'a> {
    Text(&'a str),
    Time(DateTime<Utc>),
    Count(u64),
    Changes(&'a [Change]),
    Provenance(&'a Provenance),
}

macro_rules! fields {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident = $object:ident $key:literal $path:literal, $kind:expr, required: $required:literal,
            input: $input:ident, otlp: $otlp:expr, column: $column:expr;
    )*) => {
        /// Every field of a record, nested ones included. The table's order is the order OTLP
        /// attributes are written in; [`Field::in_key_order`] gives each object's fields in
        /// the byte order of their keys (canonical JSON).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Field {
            $($(#[doc = $doc])* $name,)*
        }

        impl Field {
            /// Every field, in table order.
            pub const ALL: &'static [Field] = &[$(Field::$name,)*];

            /// The object the field belongs to.
            #[inline]
            pub const fn object(self) -> Object {
                match self { $(Field::$name => Object::$object,)* }
            }

            /// The field's key in its object's JSON.
            #[inline]
            pub const fn key(self) -> &'static str {
                match self { $(Field::$name => $key,)* }
            }

            /// The field's path from the record (`actor.email`): how errors name it.
            #[inline]
            pub const fn path(self) -> &'static str {
                match self { $(Field::$name => $path,)* }
            }

            /// What the field holds.
            #[inline]
            pub const fn kind(self) -> Kind {
                match self { $(Field::$name => $kind,)* }
            }

            /// Whether a record (or the nested object, once given) must have it.
            #[inline]
            pub const fn required(self) -> bool {
                match self { $(Field::$name => $required,)* }
            }

            /// What input does with it.
            #[inline]
            pub const fn input(self) -> Input {
                match self { $(Field::$name => Input::$input,)* }
            }

            /// Where it travels in OTLP.
            #[inline]
            pub const fn otlp(self) -> Otlp {
                match self { $(Field::$name => $otlp,)* }
            }

            /// Its column in the collector's index, if it has one of its own.
            #[inline]
            pub const fn column(self) -> Option<&'static str> {
                match self { $(Field::$name => $column,)* }
            }

            /// The field of `object` whose JSON key is `key`.
            #[inline]
            pub fn from_key(object: Object, key: &str) -> Option<Field> {
                match (object, key) {
                    $((Object::$object, $key) => Some(Field::$name),)*
                    _ => None,
                }
            }

            /// The field at `path` (`actor.email`).
            pub fn from_path(path: &str) -> Option<Field> {
                match path {
                    $($path => Some(Field::$name),)*
                    _ => None,
                }
            }
        }
    };
}

use Otlp::{Attribute, Body, Metadata as InMetadata, Refused, TimeUnixNano};

fields! {
    /// Unique per org. Set by the producer, or derived by the agent from (source, offset).
    Id = Record "id" "id", Kind::Id { max_bytes: MAX_ID_BYTES }, required: false,
        input: Read, otlp: Attribute("audit.id"), column: Some("id");
    /// The organization whose log the record belongs to.
    OrgId = Record "org_id" "org_id", Kind::Id { max_bytes: MAX_ORG_ID_BYTES }, required: true,
        input: Read, otlp: Attribute("audit.org_id"), column: Some("org");
    /// What was done: `category.event`.
    Action = Record "action" "action", Kind::Text, required: true,
        input: Read, otlp: Attribute("audit.action"), column: Some("action");
    /// Who performed the action.
    Actor = Record "actor" "actor", Kind::Object(Object::Actor), required: true,
        input: Read, otlp: Otlp::None, column: None;
    ActorId = Actor "id" "actor.id", Kind::Id { max_bytes: MAX_ID_BYTES }, required: true,
        input: Read, otlp: Attribute("enduser.id"), column: Some("actor_id");
    ActorName = Actor "name" "actor.name", Kind::Text, required: false,
        input: Read, otlp: Attribute("audit.actor.name"), column: None;
    ActorEmail = Actor "email" "actor.email", Kind::Text, required: false,
        input: Read, otlp: Attribute("audit.actor.email"), column: Some("actor_email");
    ActorKind = Actor "kind" "actor.kind", Kind::Enum, required: false,
        input: Read, otlp: Attribute("audit.actor.kind"), column: None;
    /// The resource affected.
    Target = Record "target" "target", Kind::Object(Object::Target), required: false,
        input: Read, otlp: Otlp::None, column: None;
    TargetKind = Target "kind" "target.kind", Kind::Enum, required: true,
        input: Read, otlp: Attribute("audit.target.kind"), column: Some("target_kind");
    TargetId = Target "id" "target.id", Kind::Id { max_bytes: MAX_ID_BYTES }, required: false,
        input: Read, otlp: Attribute("audit.target.id"), column: Some("target_id");
    TargetName = Target "name" "target.name", Kind::Text, required: false,
        input: Read, otlp: Attribute("audit.target.name"), column: None;
    /// The repository the event concerns.
    Repository = Record "repository" "repository", Kind::Text, required: false,
        input: Read, otlp: Attribute("audit.repository"), column: Some("repository");
    Outcome = Record "outcome" "outcome", Kind::Enum, required: false,
        input: Read, otlp: Attribute("audit.outcome"), column: Some("outcome");
    /// Additional context; keys other than its fields are kept as given.
    Metadata = Record "metadata" "metadata", Kind::Object(Object::Metadata), required: false,
        input: Read, otlp: Otlp::None, column: None;
    MetadataIp = Metadata "ip" "metadata.ip", Kind::Text, required: false,
        input: Read, otlp: Attribute("client.address"), column: None;
    MetadataUserAgent = Metadata "user_agent" "metadata.user_agent", Kind::Text, required: false,
        input: Read, otlp: Attribute("user_agent.original"), column: None;
    SchemaVersion = Record "schema_version" "schema_version", Kind::Count, required: false,
        input: Read, otlp: Attribute("audit.schema_version"), column: None;
    MetadataChanges = Metadata "changes" "metadata.changes", Kind::Changes, required: false,
        input: Read, otlp: InMetadata, column: None;
    MetadataScanType = Metadata "scan_type" "metadata.scan_type", Kind::Text, required: false,
        input: Read, otlp: InMetadata, column: None;
    /// When the action happened.
    Time = Record "time" "time", Kind::Time, required: true,
        input: Read, otlp: TimeUnixNano, column: Some("time");
    Message = Record "message" "message", Kind::Text, required: false,
        input: Read, otlp: Body, column: None;
    /// The part of the action before the dot: derived, never trusted from input.
    Category = Record "category" "category", Kind::Text, required: false,
        input: Derived, otlp: Otlp::None, column: Some("category");
    /// When the collector accepted the record.
    ReceivedAt = Record "received_at" "received_at", Kind::Time, required: false,
        input: Read, otlp: Otlp::None, column: Some("received_at");
    /// Who wrote the record into the log: the collector's to set.
    Provenance = Record "provenance" "provenance", Kind::Provenance, required: false,
        input: Refused, otlp: Refused("audit.provenance"), column: None;
    /// The hash chain ([`crate::chain`]): the collector's to assign.
    Hash = Record "hash" "hash", Kind::Text, required: false,
        input: Dropped, otlp: Otlp::None, column: None;
    PrevHash = Record "prev_hash" "prev_hash", Kind::Text, required: false,
        input: Dropped, otlp: Otlp::None, column: None;
    Seq = Record "seq" "seq", Kind::Count, required: false,
        input: Dropped, otlp: Otlp::None, column: Some("seq");
}

impl Field {
    /// The fields of `object`, in the byte order of their keys: the order of canonical JSON.
    #[inline]
    pub fn in_key_order(object: Object) -> &'static [Field] {
        match object {
            Object::Record => &RECORD_KEY_ORDER,
            Object::Actor => &ACTOR_KEY_ORDER,
            Object::Target => &TARGET_KEY_ORDER,
            Object::Metadata => &METADATA_KEY_ORDER,
        }
    }

    /// The OTLP attribute that carries the field, if one does.
    #[inline]
    pub const fn attribute(self) -> Option<&'static str> {
        match self.otlp() {
            Otlp::Attribute(a) => Some(a),
            _ => None,
        }
    }

    /// The field carried by the OTLP attribute `key`.
    pub fn from_attribute(key: &str) -> Option<Field> {
        let i = ATTRIBUTE_KEYS.iter().position(|a| *a == key)?;
        Some(ATTRIBUTE_FIELDS[i])
    }

    /// The field's value in `r`; `None` when the record has none (an absent option, an empty
    /// category, no changes) and for objects, whose fields carry the values.
    #[inline(always)]
    pub fn value(self, r: &AuditRecord) -> Option<FieldValue<'_>> {
        use FieldValue::{Count, Text};
        Some(match self {
            Field::Id => Text(r.id.as_deref()?),
            Field::OrgId => Text(&r.org_id),
            Field::Action => Text(&r.action),
            Field::Actor | Field::Target | Field::Metadata => return None,
            Field::ActorId => Text(&r.actor.id),
            Field::ActorName => Text(r.actor.name.as_deref()?),
            Field::ActorEmail => Text(r.actor.email.as_deref()?),
            Field::ActorKind => Text(r.actor.kind.as_str()),
            Field::TargetKind => Text(r.target.as_ref()?.kind.as_str()),
            Field::TargetId => Text(r.target.as_ref()?.id.as_deref()?),
            Field::TargetName => Text(r.target.as_ref()?.name.as_deref()?),
            Field::Repository => Text(r.repository.as_deref()?),
            Field::Outcome => Text(r.outcome.as_str()),
            Field::MetadataIp => Text(r.metadata.ip.as_deref()?),
            Field::MetadataUserAgent => Text(r.metadata.user_agent.as_deref()?),
            Field::SchemaVersion => Count(u64::from(r.schema_version)),
            Field::MetadataChanges if r.metadata.changes.is_empty() => return None,
            Field::MetadataChanges => FieldValue::Changes(&r.metadata.changes),
            Field::MetadataScanType => Text(r.metadata.scan_type.as_deref()?),
            Field::Time => FieldValue::Time(r.time),
            Field::Message => Text(r.message.as_deref()?),
            Field::Category if r.category.is_empty() => return None,
            Field::Category => Text(&r.category),
            Field::ReceivedAt => FieldValue::Time(r.received_at?),
            Field::Provenance => FieldValue::Provenance(r.provenance.as_ref()?),
            Field::Hash => Text(r.hash.as_deref()?),
            Field::PrevHash => Text(r.prev_hash.as_deref()?),
            Field::Seq => Count(r.seq?),
        })
    }
}

/// The fields carried by an attribute of their own, in table order (the order they are
/// written in).
pub const ATTRIBUTE_FIELDS: [Field; count(Select::Attribute)] = select(Select::Attribute);

/// The attributes of [`ATTRIBUTE_FIELDS`], by index: what [`Field::from_attribute`] searches.
const ATTRIBUTE_KEYS: [&str; ATTRIBUTE_FIELDS.len()] = {
    let mut keys = [""; ATTRIBUTE_FIELDS.len()];
    let mut i = 0;
    while i < keys.len() {
        keys[i] = match ATTRIBUTE_FIELDS[i].attribute() {
            Some(a) => a,
            None => "",
        };
        i += 1;
    }
    keys
};

/// The record's fields in the byte order of their keys (canonical JSON's order).
pub(crate) const RECORD_KEY_ORDER: [Field; count(Select::In(Object::Record))] =
    sorted(select(Select::In(Object::Record)));
const ACTOR_KEY_ORDER: [Field; count(Select::In(Object::Actor))] =
    sorted(select(Select::In(Object::Actor)));
const TARGET_KEY_ORDER: [Field; count(Select::In(Object::Target))] =
    sorted(select(Select::In(Object::Target)));
const METADATA_KEY_ORDER: [Field; count(Select::In(Object::Metadata))] =
    sorted(select(Select::In(Object::Metadata)));

/// Which fields a compile-time list holds.
#[derive(Clone, Copy)]
enum Select {
    Attribute,
    In(Object),
}

impl Select {
    const fn keeps(self, f: Field) -> bool {
        match self {
            Select::Attribute => f.attribute().is_some(),
            Select::In(o) => f.object() as u8 == o as u8,
        }
    }
}

/// How many fields `which` keeps (compile time).
const fn count(which: Select) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < Field::ALL.len() {
        if which.keeps(Field::ALL[i]) {
            n += 1;
        }
        i += 1;
    }
    n
}

/// The fields `which` keeps, in table order (compile time; `N` must be their count).
const fn select<const N: usize>(which: Select) -> [Field; N] {
    let mut out = [Field::Id; N];
    let (mut n, mut i) = (0, 0);
    while i < Field::ALL.len() {
        if which.keeps(Field::ALL[i]) {
            out[n] = Field::ALL[i];
            n += 1;
        }
        i += 1;
    }
    assert!(n == N);
    out
}

/// `fields` sorted by the bytes of their keys (compile time).
const fn sorted<const N: usize>(mut fields: [Field; N]) -> [Field; N] {
    let mut i = 1;
    while i < N {
        let mut j = i;
        while j > 0 && key_less(fields[j].key(), fields[j - 1].key()) {
            let t = fields[j];
            fields[j] = fields[j - 1];
            fields[j - 1] = t;
            j -= 1;
        }
        i += 1;
    }
    fields
}

const fn key_less(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

impl Object {
    /// The object's path from the record: `""` for the record, else its field's key.
    #[inline]
    pub const fn path(self) -> &'static str {
        match self {
            Object::Record => "",
            Object::Actor => Field::Actor.path(),
            Object::Target => Field::Target.path(),
            Object::Metadata => Field::Metadata.path(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_the_object_path_and_the_key() {
        for &f in Field::ALL {
            let want = match f.object() {
                Object::Record => f.key().to_string(),
                o => format!("{}.{}", o.path(), f.key()),
            };
            assert_eq!(f.path(), want, "{f:?}");
            assert_eq!(Field::from_path(f.path()), Some(f));
            assert_eq!(Field::from_key(f.object(), f.key()), Some(f));
            if let Some(a) = f.attribute() {
                assert_eq!(Field::from_attribute(a), Some(f));
            }
        }
    }

    #[test]
    fn key_orders_are_sorted_and_complete() {
        for object in [
            Object::Record,
            Object::Actor,
            Object::Target,
            Object::Metadata,
        ] {
            let order = Field::in_key_order(object);
            assert!(order.is_sorted_by(|a, b| a.key().as_bytes() < b.key().as_bytes()));
            let all = Field::ALL.iter().filter(|f| f.object() == object).count();
            assert_eq!(order.len(), all, "{object:?}");
        }
    }

    /// The table names every key of a full record's serde JSON, and no other.
    #[test]
    fn the_table_is_the_record() {
        let json = serde_json::json!({
            "id": "e", "org_id": "o", "time": "2026-11-27T10:00:00.000000Z",
            "actor": {"id": "u", "name": "n", "email": "a@b.co", "kind": "user"},
            "action": "scan.triggered", "category": "scan",
            "target": {"kind": "repository", "id": "r", "name": "n"},
            "repository": "r", "outcome": "success", "message": "m",
            "metadata": {"ip": "::1", "user_agent": "u", "scan_type": "s",
                "changes": [{"field": "f", "old": 1, "new": 2}]},
            "schema_version": 1, "received_at": "2026-11-27T10:00:00.000000Z", "seq": 1,
            "prev_hash": "p", "provenance": {"writer": "collector"}, "hash": "h",
        });
        let record: AuditRecord = serde_json::from_value(json.clone()).unwrap();
        let back = serde_json::to_value(&record).unwrap();
        assert_eq!(back, json);
        let mut paths = Vec::new();
        for (k, v) in back.as_object().unwrap() {
            paths.push(k.clone());
            if let (Some(m), true) = (v.as_object(), k != "provenance") {
                paths.extend(m.keys().map(|c| format!("{k}.{c}")));
            }
        }
        paths.sort();
        let mut table: Vec<String> = Field::ALL.iter().map(|f| f.path().to_string()).collect();
        table.sort();
        assert_eq!(paths, table);
        for &f in Field::ALL {
            assert_eq!(
                f.value(&record).is_none(),
                matches!(f.kind(), Kind::Object(_)),
                "{f:?}"
            );
        }
    }
}
