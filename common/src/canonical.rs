//! Canonical JSON: object keys in byte order, no insignificant whitespace. The same record always
//! encodes to the same bytes whatever order its fields came in, so the encoding can be hashed.
//!
//! Records are written field by field straight from the struct ([`write_record`]), not through a
//! `serde_json::Value` tree: this runs on every ingested record, once into a [`Length`] (the size
//! check) and once into the unsealed stored form, from which sealing renders the hashed one. The
//! definition it must equal — serde's JSON of the record with every object's keys sorted — is
//! kept in the tests, which compare the two over varied records.

use crate::record::{AuditRecord, Change, Provenance};
use crate::schema::{self, Field, FieldValue, Kind};
use serde_json::Value;
use std::fmt;

/// Where canonical JSON is written: a `String`, or a [`Length`] that only counts the bytes (the
/// size check, which needs no copy of the record).
pub(crate) trait Out: fmt::Write {
    fn push(&mut self, c: char);
    fn push_str(&mut self, s: &str);
    /// Bytes written so far.
    fn len(&self) -> usize;
    fn reserve(&mut self, additional: usize);
}

impl Out for String {
    #[inline]
    fn push(&mut self, c: char) {
        String::push(self, c);
    }
    #[inline]
    fn push_str(&mut self, s: &str) {
        String::push_str(self, s);
    }
    #[inline]
    fn len(&self) -> usize {
        String::len(self)
    }
    #[inline]
    fn reserve(&mut self, additional: usize) {
        String::reserve(self, additional);
    }
}

/// Counts the bytes canonical JSON would take, without writing them.
#[derive(Debug, Default)]
pub(crate) struct Length(usize);

impl fmt::Write for Length {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

impl Out for Length {
    #[inline]
    fn push(&mut self, c: char) {
        self.0 += c.len_utf8();
    }
    #[inline]
    fn push_str(&mut self, s: &str) {
        self.0 += s.len();
    }
    #[inline]
    fn len(&self) -> usize {
        self.0
    }
    #[inline]
    fn reserve(&mut self, _: usize) {}
}

/// Writes `value` as canonical JSON.
pub fn to_canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

pub(crate) fn write_value<O: Out + ?Sized>(value: &Value, out: &mut O) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_value(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(v, out);
            }
            out.push(']');
        }
        Value::String(s) => write_string(s, out),
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        // A number has one serde_json spelling; Display gives it without allocating a String.
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
    }
}

/// For each byte: 0 if it stands for itself in a JSON string, else the letter after the `\\`
/// (`u` for the `\\u00xx` form).
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[b'\t' as usize] = b't';
    t[b'\n' as usize] = b'n';
    t[0x0c] = b'f';
    t[b'\r' as usize] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Writes `s` as a JSON string, escaped exactly as serde_json does: `"` and `\`, the control
/// characters U+0000..U+001F (`\b \t \n \f \r` short, the rest as `\u00xx` in lowercase hex);
/// everything else, non-ASCII included, as it is.
pub(crate) fn write_string<O: Out + ?Sized>(s: &str, out: &mut O) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = ESCAPE[usize::from(b)];
        if escape == 0 {
            continue;
        }
        // Every escaped byte is ASCII, so `i` is a char boundary.
        out.push_str(&s[start..i]);
        out.push('\\');
        out.push(char::from(escape));
        if escape == b'u' {
            out.push_str("00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Which fields [`write_record`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChainFields {
    /// Every field the record has.
    Write,
    /// Leave the chain fields (`hash`, `prev_hash`, `seq`) out; the returned offsets mark where
    /// each would go.
    Mark,
    /// The record's content only: without the chain fields and without what says who sent it,
    /// when and under which id (`id`, `received_at`, `provenance`). Two sends of one record
    /// have the same content whoever sent them ([`AuditRecord::content_json`]).
    Content,
}

/// An object being written: commas between entries, and the chain-field offsets still waiting
/// for the next entry (or the closing brace) to fix where they are.
pub(crate) struct Object<'a, O: Out + ?Sized = String> {
    out: &'a mut O,
    first: bool,
    /// Indexes into [`crate::schema::CHAIN_FIELDS`] whose place is the next entry's start.
    pending: [bool; 3],
    at: [usize; 3],
}

impl<'a, O: Out + ?Sized> Object<'a, O> {
    pub(crate) fn open(out: &'a mut O) -> Object<'a, O> {
        out.push('{');
        Object {
            out,
            first: true,
            pending: [false; 3],
            at: [0; 3],
        }
    }

    #[inline]
    pub(crate) fn key(&mut self, key: &str) -> &mut O {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.settle();
        write_string(key, self.out);
        self.out.push(':');
        self.out
    }

    #[inline]
    pub(crate) fn str(&mut self, key: &str, value: &str) {
        let out = self.key(key);
        write_string(value, out);
    }

    /// One field's entry.
    #[inline]
    fn field(&mut self, key: &str, value: FieldValue) {
        match value {
            FieldValue::Text(s) => self.str(key, s),
            other => self.other_field(key, other),
        }
    }

    /// One field's entry, for values other than text.
    fn other_field(&mut self, key: &str, value: FieldValue) {
        match value {
            FieldValue::Text(s) => self.str(key, s),
            FieldValue::Time(t) => self.str(key, &crate::time::format_rfc3339(&t)),
            FieldValue::Count(n) => {
                let _ = write!(self.key(key), "{n}");
            }
            FieldValue::Provenance(p) => write_provenance(p, self.key(key)),
            FieldValue::Changes(changes) => {
                let out = self.key(key);
                out.push('[');
                for (i, c) in changes.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_change(c, out);
                }
                out.push(']');
            }
        }
    }

    /// Marks chain field `field` as going where the next entry starts.
    fn mark(&mut self, field: usize) {
        self.pending[field] = true;
    }

    fn settle(&mut self) {
        for (pending, at) in self.pending.iter_mut().zip(&mut self.at) {
            if *pending {
                *at = self.out.len();
                *pending = false;
            }
        }
    }

    pub(crate) fn close(mut self) -> [usize; 3] {
        self.settle();
        self.out.push('}');
        self.at
    }
}

/// Writes `r` as canonical JSON. With [`ChainFields::Mark`], `hash`, `prev_hash` and `seq` are
/// left out and the returned offsets (in `out`, by [`crate::schema::CHAIN_FIELDS`] index) mark
/// where each goes: the start of the first entry whose key sorts after it, or the closing `}`.
///
/// The fields and their order come from the table ([`Field::in_key_order`]); each present
/// field is written as its [`FieldValue`].
pub(crate) fn write_record<O: Out + ?Sized>(
    r: &AuditRecord,
    chain: ChainFields,
    out: &mut O,
) -> Marks {
    let mut sender = [(0, 0); 3];
    let mut o = Object::open(out);
    for field in schema::RECORD_KEY_ORDER {
        if chain == ChainFields::Mark
            && let Some(slot) = chain_slot(field)
        {
            o.mark(slot);
            continue;
        }
        if chain == ChainFields::Content
            && (chain_slot(field).is_some() || sender_slot(field).is_some())
        {
            continue;
        }
        match field.kind() {
            Kind::Object(schema::Object::Metadata) => {
                if !r.metadata.is_empty() {
                    write_metadata(r, o.key(field.key()));
                }
            }
            Kind::Object(object) => {
                // Present when given: the actor always, the target when there is one.
                if object == schema::Object::Actor || r.target.is_some() {
                    write_fields(r, object, o.key(field.key()));
                }
            }
            _ => {
                if let Some(value) = field.value(r) {
                    let start = o.out.len();
                    o.field(field.key(), value);
                    if let Some(slot) = sender_slot(field) {
                        sender[slot] = (start, o.out.len());
                    }
                }
            }
        }
    }
    Marks {
        chain: o.close(),
        sender,
    }
}

/// Where [`write_record`] put what a record's content leaves out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Marks {
    /// With [`ChainFields::Mark`], where each of [`crate::schema::CHAIN_FIELDS`] goes.
    pub(crate) chain: [usize; 3],
    /// The byte range of the `id`, `received_at` and `provenance` entries, each with the comma
    /// before it (`action` always comes first, so each has one); empty when absent. Without
    /// them and the chain fields, the JSON is [`AuditRecord::content_json`].
    pub(crate) sender: [(usize, usize); 3],
}

/// The place in [`Marks::sender`] of a field that says who sent a record, when, under which id.
fn sender_slot(field: Field) -> Option<usize> {
    match field {
        Field::Id => Some(0),
        Field::ReceivedAt => Some(1),
        Field::Provenance => Some(2),
        _ => None,
    }
}

/// The index of a chain field in [`crate::schema::CHAIN_FIELDS`].
fn chain_slot(field: Field) -> Option<usize> {
    match field {
        Field::Hash => Some(0),
        Field::PrevHash => Some(1),
        Field::Seq => Some(2),
        _ => None,
    }
}

/// A nested object whose fields are all plain values (the actor, the target).
fn write_fields<O: Out + ?Sized>(r: &AuditRecord, object: schema::Object, out: &mut O) {
    let mut o = Object::open(out);
    for &field in Field::in_key_order(object) {
        if let Some(value) = field.value(r) {
            o.field(field.key(), value);
        }
    }
    o.close();
}

fn write_provenance<O: Out + ?Sized>(p: &Provenance, out: &mut O) {
    let mut o = Object::open(out);
    if let Some(key_id) = p.key_id() {
        o.str("key_id", key_id);
    }
    if let Some(source) = p.source() {
        o.str("source", source);
    }
    o.str("writer", p.writer());
    o.close();
}

fn write_change<O: Out + ?Sized>(c: &Change, out: &mut O) {
    let mut o = Object::open(out);
    o.str("field", &c.field);
    write_value(&c.new, o.key("new"));
    write_value(&c.old, o.key("old"));
    o.close();
}

/// The metadata's fields merged in byte order with the free-form keys (already sorted: a
/// `BTreeMap<String, _>` orders by bytes). A free-form key equal to a field's wins, as it does
/// in serde's flattened form.
fn write_metadata<O: Out + ?Sized>(r: &AuditRecord, out: &mut O) {
    let m = &r.metadata;
    let mut named = Field::in_key_order(schema::Object::Metadata)
        .iter()
        .filter(|f| !m.extra.contains_key(f.key()))
        .filter_map(|&f| Some((f.key(), f.value(r)?)))
        .peekable();
    let mut o = Object::open(out);
    for (key, value) in &m.extra {
        while let Some((k, _)) = named.peek()
            && k.as_bytes() < key.as_bytes()
        {
            let (k, v) = named.next().expect("peeked");
            o.field(k, v);
        }
        write_value(value, o.key(key));
    }
    for (k, v) in named {
        o.field(k, v);
    }
    o.close();
}

impl AuditRecord {
    /// The record as canonical JSON: the form that is stored, hashed and size-checked.
    pub fn canonical_json(&self) -> String {
        let mut out = String::with_capacity(768);
        write_record(self, ChainFields::Write, &mut out);
        out
    }

    /// The length in bytes of [`AuditRecord::canonical_json`], counted without building it.
    pub fn canonical_len(&self) -> usize {
        let mut length = Length::default();
        write_record(self, ChainFields::Write, &mut length);
        length.len()
    }

    /// What the record says, as canonical JSON: without its id, who sent it, when it arrived and
    /// its chain fields. A resend of a record has the same content as the record stored, so an
    /// id that comes again with other content is another record, not a resend.
    pub fn content_json(&self) -> String {
        let mut out = String::with_capacity(768);
        write_record(self, ChainFields::Content, &mut out);
        out
    }

    /// Feeds [`AuditRecord::content_json`] to `hasher` without building it.
    pub fn hash_content<H: std::hash::Hasher>(&self, hasher: &mut H) {
        let mut out = Hashed { hasher, len: 0 };
        write_record(self, ChainFields::Content, &mut out);
    }
}

/// Canonical JSON fed to a hasher as it is written.
struct Hashed<'a, H> {
    hasher: &'a mut H,
    len: usize,
}

impl<H: std::hash::Hasher> fmt::Write for Hashed<'_, H> {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        Out::push_str(self, s);
        Ok(())
    }
}

impl<H: std::hash::Hasher> Out for Hashed<'_, H> {
    #[inline]
    fn push(&mut self, c: char) {
        let mut buf = [0; 4];
        self.push_str(c.encode_utf8(&mut buf));
    }
    #[inline]
    fn push_str(&mut self, s: &str) {
        self.hasher.write(s.as_bytes());
        self.len += s.len();
    }
    #[inline]
    fn len(&self) -> usize {
        self.len
    }
    #[inline]
    fn reserve(&mut self, _: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Actor, ActorKind, Metadata, Outcome, Target, TargetKind};
    use chrono::{TimeZone, Utc};
    use std::collections::BTreeMap;

    /// The definition: serde's JSON of the record, every object's keys sorted.
    fn reference(r: &AuditRecord) -> String {
        to_canonical_json(&serde_json::to_value(r).unwrap())
    }

    #[test]
    fn key_order_does_not_matter() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,2,{"q":null,"p":"x"}],"x":true}}"#).unwrap();
        let b: Value = serde_json::from_str(
            r#"{ "a" : { "x" : true, "y" : [1, 2, {"p":"x","q":null}] }, "b" : 1 }"#,
        )
        .unwrap();
        assert_eq!(to_canonical_json(&a), to_canonical_json(&b));
        assert_eq!(
            to_canonical_json(&a),
            r#"{"a":{"x":true,"y":[1,2,{"p":"x","q":null}]},"b":1}"#
        );
    }

    #[test]
    fn strings_are_escaped() {
        let v = Value::String("a\"b\\c\n\u{1}é".into());
        assert_eq!(to_canonical_json(&v), r#""a\"b\\c\n\u0001é""#);
    }

    #[test]
    fn string_escaping_equals_serde_json_for_every_ascii_byte_and_more() {
        let mut all: String = (0u8..128).map(char::from).collect();
        all.push_str("é€😀\u{7f}\u{2028}");
        for s in [all.as_str(), "", "plain", "\u{0}\u{1f}", "\"\"\\\\"] {
            let mut ours = String::new();
            write_string(s, &mut ours);
            assert_eq!(ours, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn numbers_booleans_and_null_keep_serde_json_spelling() {
        let v: Value = serde_json::from_str(
            r#"[0,-1,1.5,1e300,-0.0,18446744073709551615,-9223372036854775808,true,false,null,2.5e-7]"#,
        )
        .unwrap();
        let ours = to_canonical_json(&v);
        assert_eq!(ours, v.to_string());
    }

    #[test]
    fn record_keys_are_sorted_and_are_every_key_of_a_full_record() {
        let record_keys: Vec<&str> = Field::in_key_order(schema::Object::Record)
            .iter()
            .map(|f| f.key())
            .collect();
        assert!(record_keys.is_sorted_by(|a, b| a.as_bytes() < b.as_bytes()));
        let Value::Object(map) = serde_json::to_value(full_record(1)).unwrap() else {
            panic!()
        };
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        let mut want = record_keys;
        want.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        assert_eq!(got, want);
    }

    fn full_record(n: u64) -> AuditRecord {
        let mut extra = BTreeMap::new();
        extra.insert(
            "zeta".to_string(),
            serde_json::json!({"b": [1, {"y": null, "x": "é"}], "a": true}),
        );
        extra.insert("alpha".to_string(), serde_json::json!(1.25));
        extra.insert("d".to_string(), serde_json::json!("tab\there"));
        extra.insert("jj".to_string(), serde_json::json!([]));
        AuditRecord {
            id: Some(format!("id-{n}")),
            org_id: "org-1".into(),
            time: Utc
                .timestamp_micros(1_790_000_000_123_456 + n as i64)
                .unwrap(),
            actor: Actor {
                id: "u\"1".into(),
                name: Some("Ada \\ Lovelace\n".into()),
                email: Some("ada@example.com".into()),
                kind: ActorKind::ApiKey,
            },
            action: "repository.created".into(),
            category: "repository".into(),
            target: Some(Target {
                kind: TargetKind::Repository,
                id: Some("r1".into()),
                name: Some("web\u{1}".into()),
            }),
            repository: Some("acme/web".into()),
            outcome: Outcome::Failure,
            message: Some("made it 😀".into()),
            metadata: Metadata {
                ip: Some("10.0.0.1".into()),
                user_agent: Some("curl/8".into()),
                scan_type: Some("sast".into()),
                changes: vec![Change {
                    field: "visibility".into(),
                    old: serde_json::json!("private"),
                    new: serde_json::json!({"v": "public", "a": [1, 2]}),
                }],
                extra,
            },
            schema_version: 1,
            received_at: Some(Utc.timestamp_micros(1_790_000_001_000_000).unwrap()),
            seq: Some(n),
            prev_hash: Some("ab".repeat(32)),
            provenance: Some(Provenance::Ingest {
                key_id: "key_0123456789abcdef".into(),
            }),
            hash: Some("cd".repeat(32)),
        }
    }

    /// Every combination of the optional parts present or absent (by the bits of `n`).
    fn variant(n: u32) -> AuditRecord {
        let mut r = full_record(u64::from(n));
        let bit = |i: u32| n & (1 << i) != 0;
        if bit(0) {
            r.id = None;
        }
        if bit(1) {
            r.actor.name = None;
            r.actor.email = None;
            r.actor.kind = ActorKind::System;
        }
        if bit(2) {
            r.category.clear();
        }
        if bit(3) {
            r.target = None;
        } else if bit(4)
            && let Some(t) = &mut r.target
        {
            t.id = None;
            t.name = None;
        }
        if bit(5) {
            r.repository = None;
            r.message = None;
        }
        if bit(6) {
            r.metadata = Metadata::default();
        } else {
            if bit(7) {
                r.metadata.extra.clear();
            }
            if bit(8) {
                r.metadata.ip = None;
                r.metadata.changes.clear();
            }
            if bit(9) {
                // A free-form key equal to a named one.
                r.metadata
                    .extra
                    .insert("scan_type".into(), serde_json::json!(["x"]));
            }
        }
        if bit(10) {
            r.received_at = None;
        }
        if bit(11) {
            r.seq = None;
            r.prev_hash = None;
            r.hash = None;
        }
        if bit(12) {
            r.provenance = None;
        } else if bit(13) {
            r.provenance = Some(Provenance::Collector);
        }
        r
    }

    #[test]
    fn records_equal_the_definition_in_every_variant() {
        for n in 0..(1 << 14) {
            let r = variant(n);
            assert_eq!(r.canonical_json(), reference(&r), "variant {n}");
        }
    }

    /// The size check counts what the stored form would take, escapes and non-ASCII included.
    #[test]
    fn counted_length_equals_the_written_length_in_every_variant() {
        for n in 0..(1 << 14) {
            let r = variant(n);
            assert_eq!(r.canonical_len(), r.canonical_json().len(), "variant {n}");
        }
    }

    #[test]
    fn marked_chain_places_equal_a_sorted_insert() {
        for n in 0..(1 << 14) {
            let r = variant(n);
            let mut bare = r.clone();
            bare.seq = None;
            bare.prev_hash = None;
            bare.hash = None;
            let mut json = String::new();
            let marks = write_record(&r, ChainFields::Mark, &mut json);
            let at = marks.chain;
            assert_eq!(json, reference(&bare), "variant {n}");
            // Without the sender's entries, the JSON is the record's content.
            let mut content = String::new();
            let mut pos = 0;
            let mut sender = marks.sender;
            sender.sort();
            for (start, end) in sender {
                content.push_str(&json[pos..start.max(pos)]);
                pos = pos.max(end);
            }
            content.push_str(&json[pos..]);
            assert_eq!(content, r.content_json(), "variant {n}");
            for (field, &p) in at.iter().enumerate() {
                let mut with = bare.clone();
                let value = match field {
                    0 => {
                        with.hash = Some("h".into());
                        "\"h\""
                    }
                    1 => {
                        with.prev_hash = Some("p".into());
                        "\"p\""
                    }
                    _ => {
                        with.seq = Some(7);
                        "7"
                    }
                };
                let name = crate::schema::CHAIN_FIELDS[field];
                let entry = format!("\"{name}\":{value}");
                let inserted = if json.as_bytes()[p] == b'}' {
                    format!("{},{entry}}}", &json[..p])
                } else {
                    format!("{}{entry},{}", &json[..p], &json[p..])
                };
                assert_eq!(inserted, reference(&with), "variant {n}, {name}");
            }
        }
    }
}
