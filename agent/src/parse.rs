//! Reading an emit line into an [`AuditRecord`] quickly.
//!
//! [`codestax_common::parse_json_line`] deserialises a well-formed line into a new record
//! (every string allocated) and takes any other line through a `serde_json::Value`, field by
//! field, collecting every problem: exact error messages. (When this parser was written it
//! always went through the `Value`, a map allocation per object and per key: a third of the
//! file source's CPU.) Here a line is read straight into the fields of a record kept from the
//! line before (whose strings are reused: a line of the usual shape allocates almost nothing). Whenever anything
//! is unusual (a field of the wrong type, a duplicate or unknown key, a key with escapes, a
//! missing required field, a record the rules refuse), the fast reading gives up and the line
//! goes through `parse_json_line`, so records and error messages are exactly the ones it gives.
//! A record the fast reading returns is the one `parse_json_line` returns (tested on variations
//! of every field, one after the other).

use std::fmt;

use codestax_common::{
    Actor, ActorKind, AuditRecord, Change, Metadata, Outcome, RecordErrors, Rules, SCHEMA_VERSION,
    Target, TargetKind, check_action, parse_json_line, validate,
};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Parses one line of the JSON-lines emit format, as [`parse_json_line`] does.
pub fn parse_line(
    line: &[u8],
    default_org: Option<&str>,
    rules: &Rules,
) -> Result<AuditRecord, RecordErrors> {
    LineParser::default()
        .parse(line, default_org, rules)
        .map(|r| r.clone())
}

/// Parses lines one after the other into one record, reusing its strings.
#[derive(Debug)]
pub struct LineParser {
    record: AuditRecord,
}

impl Default for LineParser {
    fn default() -> LineParser {
        LineParser {
            record: AuditRecord {
                id: None,
                org_id: String::new(),
                time: chrono::DateTime::UNIX_EPOCH,
                actor: Actor {
                    id: String::new(),
                    name: None,
                    email: None,
                    kind: ActorKind::default(),
                },
                action: String::new(),
                category: String::new(),
                target: None,
                repository: None,
                outcome: Outcome::default(),
                message: None,
                metadata: Metadata::default(),
                schema_version: SCHEMA_VERSION,
                received_at: None,
                seq: None,
                prev_hash: None,
                provenance: None,
                hash: None,
            },
        }
    }
}

impl LineParser {
    /// Parses one line as [`parse_json_line`] does. The record is the parser's own, until the
    /// next line.
    pub fn parse(
        &mut self,
        line: &[u8],
        default_org: Option<&str>,
        rules: &Rules,
    ) -> Result<&mut AuditRecord, RecordErrors> {
        if !self.fast(line, default_org, rules) {
            self.record = parse_json_line(line, default_org, rules)?;
        }
        Ok(&mut self.record)
    }

    /// Reads an ordinary valid line into the record; false for anything else (the record is
    /// then left half-written).
    fn fast(&mut self, line: &[u8], default_org: Option<&str>, rules: &Rules) -> bool {
        if line.len() > rules.max_record_bytes.saturating_mul(4) {
            return false;
        }
        // UTF-8 checked once for the line, not string by string.
        let Ok(text) = std::str::from_utf8(line) else {
            return false;
        };
        let mut de = serde_json::Deserializer::from_str(text);
        let record = &mut self.record;
        if de
            .deserialize_map(RecordInto {
                record: &mut *record,
                default_org,
            })
            .is_err()
            || de.end().is_err()
        {
            return false;
        }
        record.category.clear();
        if let Ok(category) = check_action(&record.action, true) {
            record.category.push_str(category);
        }
        validate(record, rules).is_ok()
    }
}

/// Gives up on the fast reading (the message is never shown).
fn give_up<E: de::Error>() -> E {
    E::custom("not for the fast reading")
}

/// Marks `bit` as seen; gives up on a key given twice (a JSON object keeps the last one).
fn once<E: de::Error>(seen: &mut u32, bit: u32) -> Result<(), E> {
    if *seen & bit != 0 {
        return Err(give_up());
    }
    *seen |= bit;
    Ok(())
}

/// A JSON string into a `String` (its buffer reused).
struct StrInto<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for StrInto<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for StrInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.clear();
        self.0.push_str(v);
        Ok(())
    }
}

/// A JSON string or `null` into an `Option<String>` (a buffer it holds reused).
struct OptStrInto<'a>(&'a mut Option<String>);

impl<'de> DeserializeSeed<'de> for OptStrInto<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for OptStrInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        *self.0 = None;
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        StrInto(self.0.get_or_insert_with(String::new)).deserialize(d)
    }
}

/// A JSON string or `null` (taken as empty) into a `String`.
fn str_or_null<'de, A: MapAccess<'de>>(map: &mut A, into: &mut String) -> Result<(), A::Error> {
    let mut value = Some(std::mem::take(into));
    map.next_value_seed(OptStrInto(&mut value))?;
    *into = value.unwrap_or_default();
    Ok(())
}

struct RecordInto<'a, 'o> {
    record: &'a mut AuditRecord,
    default_org: Option<&'o str>,
}

impl<'de> Visitor<'de> for RecordInto<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an audit record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let r = self.record;
        let mut seen = 0u32;
        const ID: u32 = 1 << 0;
        const ORG: u32 = 1 << 1;
        const TIME: u32 = 1 << 2;
        const ACTOR: u32 = 1 << 3;
        const ACTION: u32 = 1 << 4;
        const CATEGORY: u32 = 1 << 5;
        const TARGET: u32 = 1 << 6;
        const REPOSITORY: u32 = 1 << 7;
        const OUTCOME: u32 = 1 << 8;
        const MESSAGE: u32 = 1 << 9;
        const METADATA: u32 = 1 << 10;
        const VERSION: u32 = 1 << 11;
        const RECEIVED: u32 = 1 << 12;
        let mut org_given = false;
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                "id" => {
                    once(&mut seen, ID)?;
                    map.next_value_seed(OptStrInto(&mut r.id))?;
                }
                "org_id" => {
                    once(&mut seen, ORG)?;
                    let mut org = Some(std::mem::take(&mut r.org_id));
                    map.next_value_seed(OptStrInto(&mut org))?;
                    org_given = org.is_some();
                    r.org_id = org.unwrap_or_default();
                }
                "time" => {
                    once(&mut seen, TIME)?;
                    let text = map.next_value::<&str>()?;
                    r.time = codestax_common::time::parse_rfc3339(text).map_err(|_| give_up())?;
                }
                "actor" => {
                    once(&mut seen, ACTOR)?;
                    map.next_value_seed(ActorInto(&mut r.actor))?;
                }
                "action" => {
                    once(&mut seen, ACTION)?;
                    str_or_null(&mut map, &mut r.action)?;
                }
                "category" => {
                    // Derived from the action; the input's is only type-checked.
                    once(&mut seen, CATEGORY)?;
                    map.next_value::<Option<&str>>()?;
                }
                "target" => {
                    once(&mut seen, TARGET)?;
                    map.next_value_seed(OptionInto(TargetInto(&mut r.target)))?;
                }
                "repository" => {
                    once(&mut seen, REPOSITORY)?;
                    map.next_value_seed(OptStrInto(&mut r.repository))?;
                }
                "outcome" => {
                    once(&mut seen, OUTCOME)?;
                    r.outcome = match map.next_value::<Option<&str>>()? {
                        None => Outcome::default(),
                        Some(s) => Outcome::parse(s).ok_or_else(give_up)?,
                    };
                }
                "message" => {
                    once(&mut seen, MESSAGE)?;
                    map.next_value_seed(OptStrInto(&mut r.message))?;
                }
                "metadata" => {
                    once(&mut seen, METADATA)?;
                    map.next_value_seed(OptionInto(MetadataInto(&mut r.metadata)))?;
                }
                "schema_version" => {
                    once(&mut seen, VERSION)?;
                    r.schema_version = map
                        .next_value::<Option<u64>>()?
                        .map_or(SCHEMA_VERSION, |v| u32::try_from(v).unwrap_or(u32::MAX));
                }
                "received_at" => {
                    once(&mut seen, RECEIVED)?;
                    r.received_at = match map.next_value::<Option<&str>>()? {
                        None => None,
                        Some(text) => Some(
                            codestax_common::time::parse_rfc3339(text).map_err(|_| give_up())?,
                        ),
                    };
                }
                // The hash-chain fields are the collector's to assign: dropped, whatever they say.
                "seq" | "prev_hash" | "hash" => {
                    map.next_value::<IgnoredAny>()?;
                }
                _ => return Err(give_up()),
            }
        }
        // Required, or a default, or nothing: what this line did not give.
        if seen & (TIME | ACTOR) != TIME | ACTOR {
            return Err(give_up());
        }
        if !org_given {
            r.org_id.clear();
            if let Some(org) = self.default_org {
                r.org_id.push_str(org);
            }
        }
        if seen & ID == 0 {
            r.id = None;
        }
        if seen & ACTION == 0 {
            r.action.clear();
        }
        if seen & TARGET == 0 {
            r.target = None;
        }
        if seen & REPOSITORY == 0 {
            r.repository = None;
        }
        if seen & OUTCOME == 0 {
            r.outcome = Outcome::default();
        }
        if seen & MESSAGE == 0 {
            r.message = None;
        }
        if seen & METADATA == 0 {
            MetadataInto(&mut r.metadata).reset();
        }
        if seen & VERSION == 0 {
            r.schema_version = SCHEMA_VERSION;
        }
        if seen & RECEIVED == 0 {
            r.received_at = None;
        }
        Ok(())
    }
}

/// `null` as the inner seed's "nothing", anything else through the inner seed.
struct OptionInto<S>(S);

/// A seed that can also say "null".
trait Nullable {
    fn null(self);
}

impl<'de, S: DeserializeSeed<'de, Value = ()> + Nullable> DeserializeSeed<'de> for OptionInto<S> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de, Value = ()> + Nullable> Visitor<'de> for OptionInto<S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null or a value")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.0.null();
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.0.deserialize(d)
    }
}

struct ActorInto<'a>(&'a mut Actor);

impl<'de> DeserializeSeed<'de> for ActorInto<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ActorInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an actor object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let a = self.0;
        let mut seen = 0u32;
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                "id" => {
                    once(&mut seen, 1)?;
                    str_or_null(&mut map, &mut a.id)?;
                }
                "name" => {
                    once(&mut seen, 2)?;
                    map.next_value_seed(OptStrInto(&mut a.name))?;
                }
                "email" => {
                    once(&mut seen, 4)?;
                    map.next_value_seed(OptStrInto(&mut a.email))?;
                }
                "kind" => {
                    once(&mut seen, 8)?;
                    a.kind = match map.next_value::<Option<&str>>()? {
                        None => ActorKind::default(),
                        Some(s) => ActorKind::parse(s).ok_or_else(give_up)?,
                    };
                }
                _ => return Err(give_up()),
            }
        }
        if seen & 1 == 0 {
            a.id.clear();
        }
        if seen & 2 == 0 {
            a.name = None;
        }
        if seen & 4 == 0 {
            a.email = None;
        }
        if seen & 8 == 0 {
            a.kind = ActorKind::default();
        }
        Ok(())
    }
}

/// Into an `Option<Target>` (a target it holds reused).
struct TargetInto<'a>(&'a mut Option<Target>);

impl Nullable for TargetInto<'_> {
    fn null(self) {
        *self.0 = None;
    }
}

impl<'de> DeserializeSeed<'de> for TargetInto<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TargetInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a target object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let t = self.0.get_or_insert_with(|| Target {
            kind: TargetKind::Repository,
            id: None,
            name: None,
        });
        let mut seen = 0u32;
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                "kind" => {
                    once(&mut seen, 1)?;
                    // Required: null is refused as missing.
                    let s = map.next_value::<&str>()?;
                    t.kind = TargetKind::parse(s).ok_or_else(give_up)?;
                }
                "id" => {
                    once(&mut seen, 2)?;
                    map.next_value_seed(OptStrInto(&mut t.id))?;
                }
                "name" => {
                    once(&mut seen, 4)?;
                    map.next_value_seed(OptStrInto(&mut t.name))?;
                }
                _ => return Err(give_up()),
            }
        }
        if seen & 1 == 0 {
            return Err(give_up());
        }
        if seen & 2 == 0 {
            t.id = None;
        }
        if seen & 4 == 0 {
            t.name = None;
        }
        Ok(())
    }
}

struct MetadataInto<'a>(&'a mut Metadata);

impl MetadataInto<'_> {
    /// No metadata.
    fn reset(self) {
        let m = self.0;
        m.ip = None;
        m.user_agent = None;
        m.scan_type = None;
        m.changes.clear();
        m.extra.clear();
    }
}

impl Nullable for MetadataInto<'_> {
    fn null(self) {
        self.reset();
    }
}

impl<'de> DeserializeSeed<'de> for MetadataInto<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MetadataInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a metadata object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let m = self.0;
        m.extra.clear();
        m.changes.clear();
        let mut seen = 0u32;
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                "ip" => {
                    once(&mut seen, 1)?;
                    map.next_value_seed(OptStrInto(&mut m.ip))?;
                }
                "user_agent" => {
                    once(&mut seen, 2)?;
                    map.next_value_seed(OptStrInto(&mut m.user_agent))?;
                }
                "scan_type" => {
                    once(&mut seen, 4)?;
                    map.next_value_seed(OptStrInto(&mut m.scan_type))?;
                }
                "changes" => {
                    once(&mut seen, 8)?;
                    m.changes = map
                        .next_value_seed(OptionSeed(ChangesSeed))?
                        .unwrap_or_default();
                }
                _ => {
                    let value = map.next_value::<Value>()?;
                    if m.extra.insert(key.to_string(), value).is_some() {
                        return Err(give_up());
                    }
                }
            }
        }
        if seen & 1 == 0 {
            m.ip = None;
        }
        if seen & 2 == 0 {
            m.user_agent = None;
        }
        if seen & 4 == 0 {
            m.scan_type = None;
        }
        Ok(())
    }
}

/// `null` as `None`, anything else through the inner seed.
struct OptionSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for OptionSeed<S> {
    type Value = Option<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for OptionSeed<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null or a value")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

struct ChangesSeed;

impl<'de> DeserializeSeed<'de> for ChangesSeed {
    type Value = Vec<Change>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Change>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ChangesSeed {
    type Value = Vec<Change>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of changes")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Change>, A::Error> {
        let mut changes = Vec::new();
        while let Some(change) = seq.next_element_seed(ChangeSeed)? {
            changes.push(change);
        }
        Ok(changes)
    }
}

struct ChangeSeed;

impl<'de> DeserializeSeed<'de> for ChangeSeed {
    type Value = Change;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Change, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ChangeSeed {
    type Value = Change;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a change object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Change, A::Error> {
        let mut seen = 0u32;
        let (mut field, mut old, mut new) = (None, Value::Null, Value::Null);
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                "field" => {
                    once(&mut seen, 1)?;
                    field = map.next_value::<Option<String>>()?;
                }
                "old" => {
                    once(&mut seen, 2)?;
                    old = map.next_value()?;
                }
                "new" => {
                    once(&mut seen, 4)?;
                    new = map.next_value()?;
                }
                _ => return Err(give_up()),
            }
        }
        Ok(Change {
            field: field.unwrap_or_default(),
            old,
            new,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const BASE: &str = r#"{"id":"bench-0000000001","org_id":"acme","time":"2026-11-27T10:00:00.123456Z","actor":{"id":"u-1","name":"Ada Lovelace","email":"ada1@acme.example","kind":"user"},"action":"scan.triggered","target":{"kind":"repository","id":"r-1","name":"acme/service-1"},"repository":"acme/service-1","outcome":"success","message":"scan 1 triggered","metadata":{"ip":"203.0.113.1","user_agent":"Mozilla/5.0","scan_type":"sast","ticket":"SEC-1"}}"#;

    /// Variations of a record: every field missing, null, of another type, duplicated,
    /// unknown keys, escapes, extra metadata of every JSON type, changes.
    pub(crate) fn variations() -> Vec<String> {
        let base: Value = serde_json::from_str(BASE).unwrap();
        let object = base.as_object().unwrap();
        let odd_values = [
            "null",
            "1",
            "-1",
            "1.5",
            "true",
            "\"\"",
            "\"x\"",
            "\"a\\u0000b\"",
            "\"a\\\"b\\\\c\\u00e9\"",
            "[]",
            "{}",
            "{\"x\":1}",
            "[1,\"a\",null,{\"b\":[]}]",
            "\"2026-11-27T10:00:00+02:00\"",
            "\"not a time\"",
            "4294967296",
            "18446744073709551615",
            "\"user\"",
            "\"api_key\"",
            "\"nobody\"",
            "\"failure\"",
            "\"custom.thing\"",
            "\"Bad Action\"",
            "\"a@b.co\"",
            "\"::1\"",
            // What belongs to the collector alone: refused on the way in.
            "\"codestax:x\"",
            "\"CodeStax:y\"",
            "\"audit_log.viewed\"",
            "\"audit_log.custom\"",
            "{\"writer\":\"collector\"}",
            "{\"writer\":\"ingest\",\"key_id\":\"key_1\"}",
        ];
        let mut out = vec![BASE.to_string()];
        let render = |map: &serde_json::Map<String, Value>| Value::Object(map.clone()).to_string();
        let paths: Vec<(Option<&str>, String)> = {
            let mut p: Vec<(Option<&str>, String)> =
                object.keys().map(|k| (None, k.clone())).collect();
            for parent in ["actor", "target", "metadata"] {
                for k in object[parent].as_object().unwrap().keys() {
                    p.push((Some(parent), k.clone()));
                }
            }
            for k in [
                "category",
                "schema_version",
                "received_at",
                "seq",
                "hash",
                "prev_hash",
                "provenance",
                "unknown",
            ] {
                p.push((None, k.to_string()));
            }
            for k in ["changes", "extra", "ip"] {
                p.push((Some("metadata"), k.to_string()));
            }
            p.push((Some("actor"), "unknown".into()));
            p.push((Some("target"), "unknown".into()));
            p
        };
        for (parent, key) in &paths {
            // Missing.
            let mut map = object.clone();
            match parent {
                None => {
                    map.remove(key);
                }
                Some(p) => {
                    map.get_mut(*p)
                        .unwrap()
                        .as_object_mut()
                        .unwrap()
                        .remove(key);
                }
            }
            out.push(render(&map));
            // Every odd value.
            for v in odd_values {
                let value: Value = serde_json::from_str(v).unwrap();
                let mut map = object.clone();
                match parent {
                    None => {
                        map.insert(key.clone(), value);
                    }
                    Some(p) => {
                        map.get_mut(*p)
                            .unwrap()
                            .as_object_mut()
                            .unwrap()
                            .insert(key.clone(), value);
                    }
                }
                out.push(render(&map));
            }
        }
        // Whole objects of other shapes.
        for parent in ["actor", "target", "metadata"] {
            for v in odd_values {
                let mut map = object.clone();
                map.insert(parent.into(), serde_json::from_str(v).unwrap());
                out.push(render(&map));
            }
        }
        // Changes of several shapes.
        for changes in [
            r#"[{"field":"role","old":"a","new":"b"}]"#,
            r#"[{"field":"role"}]"#,
            r#"[{"field":null,"old":1}]"#,
            r#"[{"field":"x","other":1}]"#,
            r#"[1]"#,
            r#"[{"field":"a","old":{"z":1,"a":[1,2]},"new":null},{"field":"b","new":2.5}]"#,
        ] {
            let mut map = object.clone();
            map["metadata"]
                .as_object_mut()
                .unwrap()
                .insert("changes".into(), serde_json::from_str(changes).unwrap());
            out.push(render(&map));
        }
        // Duplicate keys, keys with escapes, spacing, trailing data.
        let dup = BASE.replacen(r#""message":"#, r#""message":"first","message":"#, 1);
        out.push(dup);
        out.push(BASE.replacen(r#""ip":"#, r#""ip":"1.1.1.1","ip":"#, 1));
        out.push(BASE.replacen(r#""ticket":"#, r#""x":1,"x":2,"ticket":"#, 1));
        out.push(BASE.replacen(r#""name":"Ada"#, r#""kind":"system","name":"Ada"#, 1));
        out.push(BASE.replacen(r#""message""#, r#""mess\u0061ge""#, 1));
        out.push(BASE.replace(',', " , ").replace(':', " :\t"));
        out.push(format!("{BASE} "));
        out.push(format!("{BASE} x"));
        out.push(format!("{BASE}{BASE}"));
        out.push(format!("[{BASE}]"));
        out.push(BASE[..BASE.len() - 10].to_string());
        out.push(String::new());
        out.push("null".into());
        out
    }

    #[test]
    fn the_same_records_and_errors_as_parse_json_line() {
        let rules = Rules {
            max_record_bytes: usize::MAX,
            allow_custom_actions: true,
            now: chrono::DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
                .unwrap()
                .into(),
            collector_entries: false,
        };
        let strict = Rules {
            allow_custom_actions: false,
            ..rules.clone()
        };
        let lines = variations();
        let mut fast_ones = 0;
        // One parser for every line, in two orders: each line is read into what the line
        // before left (other fields, other shapes, failed lines).
        for order in [false, true] {
            let mut parser = LineParser::default();
            let mut lines: Vec<&String> = lines.iter().collect();
            if order {
                lines.reverse();
            }
            for line in lines {
                for default_org in [None, Some("org-default")] {
                    for rules in [&rules, &strict] {
                        let slow = parse_json_line(line.as_bytes(), default_org, rules);
                        if parser.fast(line.as_bytes(), default_org, rules) {
                            fast_ones += 1;
                            assert_eq!(slow.as_ref(), Ok(&parser.record), "{line}");
                        }
                        let got = parser.parse(line.as_bytes(), default_org, rules);
                        assert_eq!(got.map(|r| r.clone()), slow, "{line}");
                        // The line again, over its own record.
                        let again = parser.parse(line.as_bytes(), default_org, rules);
                        assert_eq!(again.map(|r| r.clone()), slow, "{line} twice");
                    }
                }
            }
        }
        // The ordinary lines do take the fast way.
        assert!(LineParser::default().fast(BASE.as_bytes(), None, &rules));
        assert!(
            fast_ones > lines.len(),
            "{fast_ones} of {} lines",
            lines.len()
        );
        assert_eq!(
            parse_line(BASE.as_bytes(), None, &rules),
            parse_json_line(BASE.as_bytes(), None, &rules)
        );
    }
}
