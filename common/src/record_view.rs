//! [`AuditRecord`](crate::AuditRecord) borrowed from its JSON ([`RecordView`]): what reads
//! records in bulk without building one `AuditRecord` each — the collector's CSV export encoder
//! and `codestax verify` (hashed in canonical form, [`RecordView::hashed_json`]). What passes
//! records on as stored (streams' `native` format, the JSON and NDJSON exports) reads only their
//! [`RecordHead`].

use crate::canonical::{Object, write_value};
use crate::record::{ActorKind, Outcome, TargetKind};
use crate::schema::{self, Field};
use chrono::{DateTime, NaiveDate, Utc};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// A string of a record's JSON: borrowed when it holds no escape, else unescaped into its own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Str<'a>(pub Cow<'a, str>);

impl Str<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Str<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for Str<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

fn is_empty(s: &Str) -> bool {
    s.0.is_empty()
}

fn empty<'a>() -> Str<'a> {
    Str(Cow::Borrowed(""))
}

fn user<'a>() -> Str<'a> {
    Str(Cow::Borrowed("user"))
}

fn success<'a>() -> Str<'a> {
    Str(Cow::Borrowed("success"))
}

fn schema_version() -> u32 {
    crate::SCHEMA_VERSION
}

/// [`AuditRecord`](crate::AuditRecord) borrowed from its JSON: the same fields, in the same
/// order, with the same defaults and omissions, so that serialising it gives the bytes
/// serialising the `AuditRecord` gives. Times and enums are kept as the strings they are stored
/// as (the serialisation of a parsed time or enum is the string it was parsed from).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecordView<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Str<'a>>,
    #[serde(borrow)]
    pub org_id: Str<'a>,
    #[serde(borrow)]
    pub time: Str<'a>,
    #[serde(borrow)]
    pub actor: ActorView<'a>,
    #[serde(borrow)]
    pub action: Str<'a>,
    #[serde(borrow, default = "empty", skip_serializing_if = "is_empty")]
    pub category: Str<'a>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetView<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<Str<'a>>,
    #[serde(borrow, default = "success")]
    pub outcome: Str<'a>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "MetadataView::is_empty")]
    pub metadata: MetadataView<'a>,
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<Str<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub prev_hash: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<ProvenanceView<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<Str<'a>>,
}

/// The fields of a stored record that place it (its org's `seq`, its times, its id) and that a
/// stream's filters match, borrowed; every other field is skipped, not built. What passes most
/// records on as stored (a `native` stream, an NDJSON export) parses this, not a [`RecordView`].
#[derive(Debug, Deserialize)]
pub struct RecordHead<'a> {
    #[serde(borrow, default)]
    pub id: Option<Str<'a>>,
    #[serde(borrow)]
    pub org_id: Str<'a>,
    #[serde(borrow)]
    pub time: Str<'a>,
    #[serde(borrow)]
    pub actor: ActorView<'a>,
    #[serde(borrow)]
    pub action: Str<'a>,
    #[serde(borrow, default = "empty")]
    pub category: Str<'a>,
    #[serde(borrow, default)]
    pub repository: Option<Str<'a>>,
    #[serde(borrow, default = "success")]
    pub outcome: Str<'a>,
    #[serde(borrow, default)]
    pub received_at: Option<Str<'a>>,
    #[serde(default)]
    pub seq: Option<u64>,
}

/// [`crate::Provenance`] borrowed: the tag first, as the enum serialises.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProvenanceView<'a> {
    #[serde(borrow)]
    pub writer: Str<'a>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Str<'a>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActorView<'a> {
    #[serde(borrow)]
    pub id: Str<'a>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Str<'a>>,
    #[serde(borrow, default = "user")]
    pub kind: Str<'a>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetView<'a> {
    #[serde(borrow)]
    pub kind: Str<'a>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Str<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Str<'a>>,
}

/// [`crate::Metadata`] borrowed: the named keys, then the others (raw JSON) in key
/// order, as the `Metadata` struct serialises.
#[derive(Debug, Default)]
pub struct MetadataView<'a> {
    pub ip: Option<Str<'a>>,
    pub user_agent: Option<Str<'a>>,
    pub scan_type: Option<Str<'a>>,
    pub changes: Vec<ChangeView<'a>>,
    pub extra: Vec<(Str<'a>, &'a RawValue)>,
    /// A key came more than once (the last one is kept, as `Metadata` keeps it).
    pub repeated_key: bool,
}

impl MetadataView<'_> {
    pub fn is_empty(&self) -> bool {
        self.ip.is_none()
            && self.user_agent.is_none()
            && self.scan_type.is_none()
            && self.changes.is_empty()
            && self.extra.is_empty()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for MetadataView<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetadataView<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a metadata object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut m = MetadataView::default();
                let mut named = [false; 4];
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    let i = match key.as_str() {
                        "ip" => {
                            m.ip = map.next_value()?;
                            0
                        }
                        "user_agent" => {
                            m.user_agent = map.next_value()?;
                            1
                        }
                        "scan_type" => {
                            m.scan_type = map.next_value()?;
                            2
                        }
                        "changes" => {
                            m.changes = map.next_value()?;
                            3
                        }
                        _ => {
                            m.extra.push((key, map.next_value()?));
                            continue;
                        }
                    };
                    m.repeated_key |= std::mem::replace(&mut named[i], true);
                }
                // `Metadata` keeps the other keys in a map: key order, the last of duplicates.
                if m.extra.len() > 1 {
                    m.extra.sort_by(|a, b| a.0.cmp(&b.0));
                    let mut deduped: Vec<(Str<'de>, &'de RawValue)> = Vec::new();
                    for (k, v) in m.extra.drain(..) {
                        match deduped.last_mut() {
                            Some(last) if last.0 == k => {
                                last.1 = v;
                                m.repeated_key = true;
                            }
                            _ => deduped.push((k, v)),
                        }
                    }
                    m.extra = deduped;
                }
                Ok(m)
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for MetadataView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if let Some(v) = &self.ip {
            map.serialize_entry("ip", v)?;
        }
        if let Some(v) = &self.user_agent {
            map.serialize_entry("user_agent", v)?;
        }
        if let Some(v) = &self.scan_type {
            map.serialize_entry("scan_type", v)?;
        }
        if !self.changes.is_empty() {
            map.serialize_entry("changes", &self.changes)?;
        }
        for (k, v) in &self.extra {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// [`crate::Change`] borrowed; a missing value is `null`, as there.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeView<'a> {
    #[serde(borrow)]
    pub field: Str<'a>,
    #[serde(borrow, default, serialize_with = "raw_or_null")]
    pub old: Option<&'a RawValue>,
    #[serde(borrow, default, serialize_with = "raw_or_null")]
    pub new: Option<&'a RawValue>,
}

fn raw_or_null<S: Serializer>(v: &Option<&RawValue>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(raw) => raw.serialize(s),
        None => s.serialize_unit(),
    }
}

// The canonical form, from the view

impl RecordView<'_> {
    /// Writes the record's hashed form ([`crate::chain`]: canonical JSON with `seq`, without
    /// `prev_hash` and `hash`) into `out`, the bytes `AuditRecord::canonical_json` gives for the
    /// record parsed from the same JSON with those two fields removed. `false` (and `out` in
    /// any state) when the view cannot be sure of that: a time not in the stored form, a kind
    /// or outcome unknown, a provenance of the wrong shape, a metadata key repeated, no `seq`.
    /// The caller then reads the line as an `AuditRecord`, which either gives these bytes or
    /// says what is wrong: the view is a shortcut, never a second definition.
    pub fn hashed_json(&self, out: &mut String) -> bool {
        if self.seq.is_none() || self.metadata.repeated_key {
            return false;
        }
        let mut o = Object::open(out);
        for &field in Field::in_key_order(schema::Object::Record) {
            let ok = match field {
                Field::Hash | Field::PrevHash => true,
                Field::Actor => self.actor.write(o.key(field.key())),
                Field::Target => match &self.target {
                    Some(t) => t.write(o.key(field.key())),
                    None => true,
                },
                Field::Metadata => {
                    self.metadata.is_empty() || self.metadata.write(o.key(field.key()))
                }
                Field::Provenance => match &self.provenance {
                    Some(p) => p.write(o.key(field.key())),
                    None => true,
                },
                Field::Outcome => {
                    Outcome::parse(&self.outcome).is_some() && {
                        o.str(field.key(), &self.outcome);
                        true
                    }
                }
                Field::Time => {
                    stored_time(&self.time).is_some() && {
                        o.str(field.key(), &self.time);
                        true
                    }
                }
                Field::ReceivedAt => match &self.received_at {
                    Some(t) => {
                        stored_time(t).is_some() && {
                            o.str(field.key(), t);
                            true
                        }
                    }
                    None => true,
                },
                Field::SchemaVersion => {
                    let _ = fmt::Write::write_fmt(
                        o.key(field.key()),
                        format_args!("{}", self.schema_version),
                    );
                    true
                }
                Field::Seq => {
                    let seq = self.seq.expect("checked above");
                    let _ = fmt::Write::write_fmt(o.key(field.key()), format_args!("{seq}"));
                    true
                }
                _ => {
                    if let Some(s) = self.text(field) {
                        o.str(field.key(), s);
                    }
                    true
                }
            };
            if !ok {
                return false;
            }
        }
        o.close();
        true
    }

    /// A top-level text field; `None` when absent (an empty category is absent, as in
    /// `AuditRecord`).
    fn text(&self, field: Field) -> Option<&str> {
        Some(match field {
            Field::Id => self.id.as_deref()?,
            Field::OrgId => &self.org_id,
            Field::Action => &self.action,
            Field::Category if self.category.is_empty() => return None,
            Field::Category => &self.category,
            Field::Repository => self.repository.as_deref()?,
            Field::Message => self.message.as_deref()?,
            _ => return None,
        })
    }
}

impl ActorView<'_> {
    fn write(&self, out: &mut String) -> bool {
        if ActorKind::parse(&self.kind).is_none() {
            return false;
        }
        let mut o = Object::open(out);
        for &field in Field::in_key_order(schema::Object::Actor) {
            let value = match field {
                Field::ActorEmail => self.email.as_deref(),
                Field::ActorId => Some(&*self.id),
                Field::ActorKind => Some(&*self.kind),
                Field::ActorName => self.name.as_deref(),
                _ => return false,
            };
            if let Some(v) = value {
                o.str(field.key(), v);
            }
        }
        o.close();
        true
    }
}

impl TargetView<'_> {
    fn write(&self, out: &mut String) -> bool {
        if TargetKind::parse(&self.kind).is_none() {
            return false;
        }
        let mut o = Object::open(out);
        for &field in Field::in_key_order(schema::Object::Target) {
            let value = match field {
                Field::TargetId => self.id.as_deref(),
                Field::TargetKind => Some(&*self.kind),
                Field::TargetName => self.name.as_deref(),
                _ => return false,
            };
            if let Some(v) = value {
                o.str(field.key(), v);
            }
        }
        o.close();
        true
    }
}

impl ProvenanceView<'_> {
    /// `Provenance` is `{"writer":"collector"}`, `{"writer":"ingest","key_id":…}` or
    /// `{"writer":"imported","key_id":…}` with an optional `source`, nothing else.
    fn write(&self, out: &mut String) -> bool {
        match (&*self.writer, &self.key_id, &self.source) {
            ("collector", None, None) | ("ingest", Some(_), None) | ("imported", Some(_), _) => {}
            _ => return false,
        }
        let mut o = Object::open(out);
        if let Some(key_id) = &self.key_id {
            o.str("key_id", key_id);
        }
        if let Some(source) = &self.source {
            o.str("source", source);
        }
        o.str("writer", &self.writer);
        o.close();
        true
    }
}

impl MetadataView<'_> {
    /// The named keys merged in byte order with the others (sorted and unique: see the
    /// deserialiser), as `canonical::write_metadata` merges them.
    fn write(&self, out: &mut String) -> bool {
        let mut o = Object::open(out);
        let mut extra = self.extra.iter().peekable();
        for &field in Field::in_key_order(schema::Object::Metadata) {
            while let Some((k, v)) = extra.next_if(|(k, _)| k.as_bytes() < field.key().as_bytes()) {
                if !write_raw(v, o.key(k)) {
                    return false;
                }
            }
            if extra.peek().is_some_and(|(k, _)| k.as_str() == field.key()) {
                // A free-form key equal to a named one cannot come from JSON (the named field
                // takes it); not worth a second definition.
                return false;
            }
            let value = match field {
                Field::MetadataIp => self.ip.as_deref(),
                Field::MetadataUserAgent => self.user_agent.as_deref(),
                Field::MetadataScanType => self.scan_type.as_deref(),
                Field::MetadataChanges => {
                    if !self.changes.is_empty() {
                        let out = o.key(field.key());
                        out.push('[');
                        for (i, c) in self.changes.iter().enumerate() {
                            if i > 0 {
                                out.push(',');
                            }
                            if !c.write(out) {
                                return false;
                            }
                        }
                        out.push(']');
                    }
                    None
                }
                _ => return false,
            };
            if let Some(v) = value {
                o.str(field.key(), v);
            }
        }
        for (k, v) in extra {
            if !write_raw(v, o.key(k)) {
                return false;
            }
        }
        o.close();
        true
    }
}

impl ChangeView<'_> {
    fn write(&self, out: &mut String) -> bool {
        let mut o = Object::open(out);
        o.str("field", &self.field);
        for (key, v) in [("new", self.new), ("old", self.old)] {
            let out = o.key(key);
            match v {
                Some(v) => {
                    if !write_raw(v, out) {
                        return false;
                    }
                }
                None => out.push_str("null"),
            }
        }
        o.close();
        true
    }
}

/// Deeper values are left to the `AuditRecord` path: the view's values are parsed on their
/// own, so serde_json's nesting limit, counted from the record's top there, would not apply.
const MAX_RAW_DEPTH: usize = 64;

/// Writes a free-form JSON value as canonical JSON, as `AuditRecord` would hold and write it
/// (a `serde_json::Value`): the common scalars as they are, anything else parsed to a `Value`.
fn write_raw(raw: &RawValue, out: &mut String) -> bool {
    let s = raw.get();
    let b = s.as_bytes();
    let plain_string = b.len() >= 2
        && b[0] == b'"'
        && b[b.len() - 1] == b'"'
        && !b[1..b.len() - 1]
            .iter()
            .any(|&c| c == b'\\' || c == b'"' || c < 0x20);
    // Up to 19 digits fits a u64, which serde_json writes back as it was read.
    let small_uint = (1..=19).contains(&b.len())
        && b.iter().all(u8::is_ascii_digit)
        && (b[0] != b'0' || b.len() == 1);
    if plain_string || small_uint || matches!(s, "true" | "false" | "null") {
        out.push_str(s);
        return true;
    }
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(v) if depth(&v) <= MAX_RAW_DEPTH => {
            write_value(&v, out);
            true
        }
        _ => false,
    }
}

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A time in the form records are stored and exported in (`2026-11-27T10:15:30.123456Z`, what
/// [`crate::time::format_rfc3339`] writes), as that time; `None` for any other spelling, even
/// of a valid time (those take the `AuditRecord` path, which parses any RFC 3339 form).
pub fn stored_time(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() != 27 {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let punct = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ];
    if punct.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let year = num(0, 4)?;
    // Four-digit years from 1000: written back with the same digits.
    if year < 1000 {
        return None;
    }
    let (hour, min, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    // A leap second (`:60`) is read by chrono into the second before: not this form.
    if sec > 59 {
        return None;
    }
    let t = NaiveDate::from_ymd_opt(year as i32, num(5, 7)?, num(8, 10)?)?.and_hms_micro_opt(
        hour,
        min,
        sec,
        num(20, 26)?,
    )?;
    Some(t.and_utc())
}
