//! Reading an emit line into an [`AuditRecord`] quickly.
//!
//! [`codestax_common::parse_json_line`] parses a line into a `serde_json::Value` first and then
//! takes the record out of it, field by field, collecting every problem: exact error messages,
//! at the price of a map allocation per object and per key (a third of the file source's CPU).
//! Here a line is read straight into the record's fields. Whenever anything is unusual (a
//! field of the wrong type, a duplicate or unknown key, a key with escapes, a missing
//! required field, a record the rules refuse), the fast reading gives up and the line goes
//! through `parse_json_line`, so records and error messages are exactly the ones it gives. A
//! record the fast reading returns is the one `parse_json_line` returns (tested on variations
//! of every field).

use std::collections::BTreeMap;
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
    match fast(line, default_org, rules) {
        Some(record) => Ok(record),
        None => parse_json_line(line, default_org, rules),
    }
}

/// The record, when the line is an ordinary valid one; `None` for anything else.
fn fast(line: &[u8], default_org: Option<&str>, rules: &Rules) -> Option<AuditRecord> {
    if line.len() > rules.max_record_bytes.saturating_mul(4) {
        return None;
    }
    // UTF-8 checked once for the line, not string by string.
    let text = std::str::from_utf8(line).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let mut record = de.deserialize_map(RecordVisitor { default_org }).ok()?;
    de.end().ok()?;
    if let Ok(category) = check_action(&record.action, true) {
        record.category = category.to_string();
    }
    validate(&record, rules).ok()?;
    Some(record)
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

struct RecordVisitor<'a> {
    default_org: Option<&'a str>,
}

impl<'de> Visitor<'de> for RecordVisitor<'_> {
    type Value = AuditRecord;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an audit record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AuditRecord, A::Error> {
        let mut seen = 0u32;
        let mut id = None;
        let mut org_id = None;
        let mut time = None;
        let mut actor = None;
        let mut action = None;
        let mut target = None;
        let mut repository = None;
        let mut outcome = None;
        let mut message = None;
        let mut metadata = None;
        let mut schema_version = None;
        let mut received_at = None;
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                "id" => {
                    once(&mut seen, 1 << 0)?;
                    id = map.next_value::<Option<String>>()?;
                }
                "org_id" => {
                    once(&mut seen, 1 << 1)?;
                    org_id = map.next_value::<Option<String>>()?;
                }
                "time" => {
                    once(&mut seen, 1 << 2)?;
                    let text = map.next_value::<&str>()?;
                    time = Some(codestax_common::time::parse_rfc3339(text).map_err(|_| give_up())?);
                }
                "actor" => {
                    once(&mut seen, 1 << 3)?;
                    actor = Some(map.next_value_seed(ActorSeed)?);
                }
                "action" => {
                    once(&mut seen, 1 << 4)?;
                    action = map.next_value::<Option<String>>()?;
                }
                "category" => {
                    // Derived from the action; the input's is only type-checked.
                    once(&mut seen, 1 << 5)?;
                    map.next_value::<Option<String>>()?;
                }
                "target" => {
                    once(&mut seen, 1 << 6)?;
                    target = map.next_value_seed(OptionSeed(TargetSeed))?;
                }
                "repository" => {
                    once(&mut seen, 1 << 7)?;
                    repository = map.next_value::<Option<String>>()?;
                }
                "outcome" => {
                    once(&mut seen, 1 << 8)?;
                    outcome = match map.next_value::<Option<&str>>()? {
                        None => None,
                        Some(s) => Some(Outcome::parse(s).ok_or_else(give_up)?),
                    };
                }
                "message" => {
                    once(&mut seen, 1 << 9)?;
                    message = map.next_value::<Option<String>>()?;
                }
                "metadata" => {
                    once(&mut seen, 1 << 10)?;
                    metadata = map.next_value_seed(OptionSeed(MetadataSeed))?;
                }
                "schema_version" => {
                    once(&mut seen, 1 << 11)?;
                    schema_version = map
                        .next_value::<Option<u64>>()?
                        .map(|v| u32::try_from(v).unwrap_or(u32::MAX));
                }
                "received_at" => {
                    once(&mut seen, 1 << 12)?;
                    received_at = match map.next_value::<Option<&str>>()? {
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
        let org_id = match org_id {
            Some(org) => org,
            None => self.default_org.map(str::to_string).unwrap_or_default(),
        };
        Ok(AuditRecord {
            id,
            org_id,
            time: time.ok_or_else(give_up)?,
            actor: actor.ok_or_else(give_up)?,
            action: action.unwrap_or_default(),
            category: String::new(),
            target,
            repository,
            outcome: outcome.unwrap_or_default(),
            message,
            metadata: metadata.unwrap_or_default(),
            schema_version: schema_version.unwrap_or(SCHEMA_VERSION),
            received_at,
            seq: None,
            prev_hash: None,
            hash: None,
        })
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

struct ActorSeed;

impl<'de> DeserializeSeed<'de> for ActorSeed {
    type Value = Actor;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Actor, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ActorSeed {
    type Value = Actor;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an actor object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Actor, A::Error> {
        let mut seen = 0u32;
        let (mut id, mut name, mut email, mut kind) = (None, None, None, None);
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                "id" => {
                    once(&mut seen, 1)?;
                    id = map.next_value::<Option<String>>()?;
                }
                "name" => {
                    once(&mut seen, 2)?;
                    name = map.next_value::<Option<String>>()?;
                }
                "email" => {
                    once(&mut seen, 4)?;
                    email = map.next_value::<Option<String>>()?;
                }
                "kind" => {
                    once(&mut seen, 8)?;
                    kind = match map.next_value::<Option<&str>>()? {
                        None => None,
                        Some(s) => Some(ActorKind::parse(s).ok_or_else(give_up)?),
                    };
                }
                _ => return Err(give_up()),
            }
        }
        Ok(Actor {
            id: id.unwrap_or_default(),
            name,
            email,
            kind: kind.unwrap_or_default(),
        })
    }
}

struct TargetSeed;

impl<'de> DeserializeSeed<'de> for TargetSeed {
    type Value = Target;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Target, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TargetSeed {
    type Value = Target;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a target object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Target, A::Error> {
        let mut seen = 0u32;
        let (mut kind, mut id, mut name) = (None, None, None);
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                "kind" => {
                    once(&mut seen, 1)?;
                    // Required: null is refused as missing.
                    let s = map.next_value::<&str>()?;
                    kind = Some(TargetKind::parse(s).ok_or_else(give_up)?);
                }
                "id" => {
                    once(&mut seen, 2)?;
                    id = map.next_value::<Option<String>>()?;
                }
                "name" => {
                    once(&mut seen, 4)?;
                    name = map.next_value::<Option<String>>()?;
                }
                _ => return Err(give_up()),
            }
        }
        Ok(Target {
            kind: kind.ok_or_else(give_up)?,
            id,
            name,
        })
    }
}

struct MetadataSeed;

impl<'de> DeserializeSeed<'de> for MetadataSeed {
    type Value = Metadata;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Metadata, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MetadataSeed {
    type Value = Metadata;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a metadata object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Metadata, A::Error> {
        let mut seen = 0u32;
        let mut m = Metadata::default();
        let mut extra = BTreeMap::new();
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                "ip" => {
                    once(&mut seen, 1)?;
                    m.ip = map.next_value::<Option<String>>()?;
                }
                "user_agent" => {
                    once(&mut seen, 2)?;
                    m.user_agent = map.next_value::<Option<String>>()?;
                }
                "scan_type" => {
                    once(&mut seen, 4)?;
                    m.scan_type = map.next_value::<Option<String>>()?;
                }
                "changes" => {
                    once(&mut seen, 8)?;
                    m.changes = map
                        .next_value_seed(OptionSeed(ChangesSeed))?
                        .unwrap_or_default();
                }
                _ => {
                    let value = map.next_value::<Value>()?;
                    if extra.insert(key.to_string(), value).is_some() {
                        return Err(give_up());
                    }
                }
            }
        }
        m.extra = extra;
        Ok(m)
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
        };
        let strict = Rules {
            allow_custom_actions: false,
            ..rules.clone()
        };
        let mut fast_ones = 0;
        let lines = variations();
        for line in &lines {
            for default_org in [None, Some("org-default")] {
                for rules in [&rules, &strict] {
                    let slow = parse_json_line(line.as_bytes(), default_org, rules);
                    if let Some(record) = fast(line.as_bytes(), default_org, rules) {
                        fast_ones += 1;
                        assert_eq!(slow.as_ref(), Ok(&record), "{line}");
                    }
                    assert_eq!(
                        parse_line(line.as_bytes(), default_org, rules),
                        slow,
                        "{line}"
                    );
                }
            }
        }
        // The ordinary lines do take the fast way.
        assert!(fast(BASE.as_bytes(), None, &rules).is_some());
        assert!(
            fast_ones > lines.len(),
            "{fast_ones} of {} lines",
            lines.len()
        );
    }
}
