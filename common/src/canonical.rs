//! Canonical JSON: object keys in byte order, no insignificant whitespace. The same record always
//! encodes to the same bytes whatever order its fields came in, so the encoding can be hashed.
//!
//! Records are written field by field straight from the struct ([`write_record`]), not through a
//! `serde_json::Value` tree: this runs up to three times per ingested record (size check, chain
//! hash, stored form). The definition it must equal — serde's JSON of the record with every
//! object's keys sorted — is kept in the tests, which compare the two over varied records.

use crate::record::{Actor, AuditRecord, Change, Metadata, Provenance, Target};
use serde_json::Value;
use std::fmt::Write as _;

/// Writes `value` as canonical JSON.
pub fn to_canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

pub(crate) fn write_value(value: &Value, out: &mut String) {
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
pub(crate) fn write_string(s: &str, out: &mut String) {
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

/// Whether [`write_record`] writes the chain fields (`hash`, `prev_hash`, `seq`) or leaves them
/// out and marks where they go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChainFields {
    Write,
    /// Leave them out; the returned offsets mark where each would go.
    Mark,
}

/// A record's top-level keys in byte order: the order [`write_record`] writes them in (a test
/// checks it is sorted and complete).
#[cfg(test)]
pub(crate) const RECORD_KEYS: [&str; 17] = [
    "action",
    "actor",
    "category",
    "hash",
    "id",
    "message",
    "metadata",
    "org_id",
    "outcome",
    "prev_hash",
    "provenance",
    "received_at",
    "repository",
    "schema_version",
    "seq",
    "target",
    "time",
];

/// An object being written: commas between entries, and the chain-field offsets still waiting
/// for the next entry (or the closing brace) to fix where they are.
struct Object<'a> {
    out: &'a mut String,
    first: bool,
    /// Indexes into [`crate::chain::CHAIN_FIELDS`] whose place is the next entry's start.
    pending: [bool; 3],
    at: [usize; 3],
}

impl<'a> Object<'a> {
    fn open(out: &'a mut String) -> Object<'a> {
        out.push('{');
        Object {
            out,
            first: true,
            pending: [false; 3],
            at: [0; 3],
        }
    }

    fn key(&mut self, key: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.settle();
        write_string(key, self.out);
        self.out.push(':');
        self.out
    }

    fn str(&mut self, key: &str, value: &str) {
        let out = self.key(key);
        write_string(value, out);
    }

    fn opt_str(&mut self, key: &str, value: &Option<String>) {
        if let Some(v) = value {
            self.str(key, v);
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

    fn close(mut self) -> [usize; 3] {
        self.settle();
        self.out.push('}');
        self.at
    }
}

/// Writes `r` as canonical JSON. With [`ChainFields::Mark`], `hash`, `prev_hash` and `seq` are
/// left out and the returned offsets (in `out`, by [`crate::chain::CHAIN_FIELDS`] index) mark
/// where each goes: the start of the first entry whose key sorts after it, or the closing `}`.
pub(crate) fn write_record(r: &AuditRecord, chain: ChainFields, out: &mut String) -> [usize; 3] {
    const HASH: usize = 0;
    const PREV_HASH: usize = 1;
    const SEQ: usize = 2;
    let mut o = Object::open(out);
    o.str("action", &r.action);
    write_actor(&r.actor, o.key("actor"));
    if !r.category.is_empty() {
        o.str("category", &r.category);
    }
    match chain {
        ChainFields::Write => o.opt_str("hash", &r.hash),
        ChainFields::Mark => o.mark(HASH),
    }
    o.opt_str("id", &r.id);
    o.opt_str("message", &r.message);
    if !r.metadata.is_empty() {
        write_metadata(&r.metadata, o.key("metadata"));
    }
    o.str("org_id", &r.org_id);
    o.str("outcome", r.outcome.as_str());
    match chain {
        ChainFields::Write => o.opt_str("prev_hash", &r.prev_hash),
        ChainFields::Mark => o.mark(PREV_HASH),
    }
    if let Some(p) = &r.provenance {
        write_provenance(p, o.key("provenance"));
    }
    if let Some(t) = &r.received_at {
        o.str("received_at", &crate::time::format_rfc3339(t));
    }
    o.opt_str("repository", &r.repository);
    let _ = write!(o.key("schema_version"), "{}", r.schema_version);
    match (chain, r.seq) {
        (ChainFields::Write, Some(seq)) => {
            let _ = write!(o.key("seq"), "{seq}");
        }
        (ChainFields::Write, None) => {}
        (ChainFields::Mark, _) => o.mark(SEQ),
    }
    if let Some(t) = &r.target {
        write_target(t, o.key("target"));
    }
    o.str("time", &crate::time::format_rfc3339(&r.time));
    o.close()
}

fn write_actor(a: &Actor, out: &mut String) {
    let mut o = Object::open(out);
    o.opt_str("email", &a.email);
    o.str("id", &a.id);
    o.str("kind", a.kind.as_str());
    o.opt_str("name", &a.name);
    o.close();
}

fn write_provenance(p: &Provenance, out: &mut String) {
    let mut o = Object::open(out);
    if let Some(key_id) = p.key_id() {
        o.str("key_id", key_id);
    }
    o.str("writer", p.writer());
    o.close();
}

fn write_target(t: &Target, out: &mut String) {
    let mut o = Object::open(out);
    o.opt_str("id", &t.id);
    o.str("kind", t.kind.as_str());
    o.opt_str("name", &t.name);
    o.close();
}

fn write_change(c: &Change, out: &mut String) {
    let mut o = Object::open(out);
    o.str("field", &c.field);
    write_value(&c.new, o.key("new"));
    write_value(&c.old, o.key("old"));
    o.close();
}

/// The named metadata keys merged in byte order with the free-form ones (already sorted: a
/// `BTreeMap<String, _>` orders by bytes). A free-form key equal to a named one wins, as it does
/// in serde's flattened form.
fn write_metadata(m: &Metadata, out: &mut String) {
    enum Named<'a> {
        Str(&'a str),
        Changes(&'a [Change]),
    }
    let mut named: [(&str, Option<Named>); 4] = [
        (
            "changes",
            (!m.changes.is_empty()).then_some(Named::Changes(&m.changes)),
        ),
        ("ip", m.ip.as_deref().map(Named::Str)),
        ("scan_type", m.scan_type.as_deref().map(Named::Str)),
        ("user_agent", m.user_agent.as_deref().map(Named::Str)),
    ];
    for (key, value) in &mut named {
        if m.extra.contains_key(*key) {
            *value = None;
        }
    }
    let mut o = Object::open(out);
    let mut named = named.into_iter().peekable();
    let write_named = |o: &mut Object, key: &str, value: Named| match value {
        Named::Str(s) => o.str(key, s),
        Named::Changes(changes) => {
            let out = o.key(key);
            out.push('[');
            for (i, c) in changes.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_change(c, out);
            }
            out.push(']');
        }
    };
    for (key, value) in &m.extra {
        while let Some((k, _)) = named.peek()
            && k.as_bytes() < key.as_bytes()
        {
            let (k, v) = named.next().expect("peeked");
            if let Some(v) = v {
                write_named(&mut o, k, v);
            }
        }
        write_value(value, o.key(key));
    }
    for (k, v) in named {
        if let Some(v) = v {
            write_named(&mut o, k, v);
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ActorKind, Outcome, TargetKind};
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
        assert!(RECORD_KEYS.is_sorted_by(|a, b| a.as_bytes() < b.as_bytes()));
        let Value::Object(map) = serde_json::to_value(full_record(1)).unwrap() else {
            panic!()
        };
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        let mut want = RECORD_KEYS.to_vec();
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

    #[test]
    fn marked_chain_places_equal_a_sorted_insert() {
        for n in 0..(1 << 14) {
            let r = variant(n);
            let mut bare = r.clone();
            bare.seq = None;
            bare.prev_hash = None;
            bare.hash = None;
            let mut json = String::new();
            let at = write_record(&r, ChainFields::Mark, &mut json);
            assert_eq!(json, reference(&bare), "variant {n}");
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
                let name = crate::chain::CHAIN_FIELDS[field];
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
