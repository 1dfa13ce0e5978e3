//! The straight path: serde's visitor reading a line into the fields of a record kept from the
//! line before (its strings reused), giving up on anything unusual. See [`super`].

use crate::record::{
    Actor, ActorKind, AuditRecord, Change, Metadata, Outcome, Provenance, SCHEMA_VERSION, Target,
    TargetKind,
};
use crate::schema::{Field, Input, Object};
use crate::validate::{Rules, validate};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// Reads an ordinary valid line into `record`; false for anything else (the record is then left
/// half-written, to be overwritten).
pub(super) fn read(
    record: &mut AuditRecord,
    text: &str,
    default_org: Option<&str>,
    rules: &Rules,
) -> bool {
    let mut de = serde_json::Deserializer::from_str(text);
    if de
        .deserialize_map(RecordInto {
            record: &mut *record,
            default_org,
            collector_entries: rules.collector_entries,
        })
        .is_err()
        || de.end().is_err()
    {
        return false;
    }
    record.category.clear();
    if let Ok(category) = crate::action::check(&record.action, true) {
        record.category.push_str(category);
    }
    validate(record, rules).is_ok()
}

/// Gives up on the fast reading (the message is never shown).
fn give_up<E: de::Error>() -> E {
    E::custom("not for the fast reading")
}

/// A dropped field's value, read only to be thrown away — but read as a value, not skipped:
/// skipping (`IgnoredAny`) does not check a number's range, so a line the thorough path refuses
/// as invalid JSON (`1e400`) would pass here. Scalars are read; anything else gives up.
struct DroppedScalar;

impl<'de> de::Deserialize<'de> for DroppedScalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DroppedScalar)
    }
}

impl<'de> Visitor<'de> for DroppedScalar {
    type Value = DroppedScalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, number, boolean or null")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_none<E>(self) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self, A::Error> {
        Err(give_up())
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self, A::Error> {
        Err(give_up())
    }
}

/// The fields an object of the line has given so far.
#[derive(Default)]
struct Seen(u64);

const _: () = assert!(Field::ALL.len() <= 64, "Seen holds a bit per field");

impl Seen {
    /// Marks `field` as seen; gives up on a key given twice (a JSON object keeps the last one).
    fn once<E: de::Error>(&mut self, field: Field) -> Result<(), E> {
        if self.has(field) {
            return Err(give_up());
        }
        self.0 |= 1 << field as u32;
        Ok(())
    }

    fn has(&self, field: Field) -> bool {
        self.0 & (1 << field as u32) != 0
    }
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
    /// [`Rules::collector_entries`]: `provenance` is read (an import's input carries the
    /// source's), not refused.
    collector_entries: bool,
}

impl<'de> Visitor<'de> for RecordInto<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an audit record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let r = self.record;
        let mut seen = Seen::default();
        let mut org_given = false;
        while let Some(key) = map.next_key::<&str>()? {
            let field = Field::from_key(Object::Record, key).ok_or_else(give_up)?;
            seen.once(field)?;
            match field.input() {
                Input::Read | Input::Derived => {}
                // The hash-chain fields are the collector's to assign: dropped, whatever they say.
                Input::Dropped => {
                    map.next_value::<DroppedScalar>()?;
                    continue;
                }
                Input::Refused if !self.collector_entries => return Err(give_up()),
                Input::Refused => {}
            }
            match field {
                Field::Id => map.next_value_seed(OptStrInto(&mut r.id))?,
                Field::OrgId => {
                    let mut org = Some(std::mem::take(&mut r.org_id));
                    map.next_value_seed(OptStrInto(&mut org))?;
                    org_given = org.is_some();
                    r.org_id = org.unwrap_or_default();
                }
                Field::Time => {
                    let text = map.next_value::<&str>()?;
                    r.time = crate::time::parse_rfc3339(text).map_err(|_| give_up())?;
                }
                Field::Actor => map.next_value_seed(ActorInto(&mut r.actor))?,
                Field::Action => str_or_null(&mut map, &mut r.action)?,
                // Derived from the action; the input's is only type-checked.
                Field::Category => {
                    map.next_value::<Option<&str>>()?;
                }
                Field::Target => map.next_value_seed(OptionInto(TargetInto(&mut r.target)))?,
                Field::Repository => map.next_value_seed(OptStrInto(&mut r.repository))?,
                Field::Outcome => {
                    r.outcome = match map.next_value::<Option<&str>>()? {
                        None => Outcome::default(),
                        Some(s) => Outcome::parse(s).ok_or_else(give_up)?,
                    };
                }
                Field::Message => map.next_value_seed(OptStrInto(&mut r.message))?,
                Field::Metadata => {
                    map.next_value_seed(OptionInto(MetadataInto(&mut r.metadata)))?
                }
                Field::SchemaVersion => {
                    r.schema_version = map
                        .next_value::<Option<u64>>()?
                        .map_or(SCHEMA_VERSION, |v| u32::try_from(v).unwrap_or(u32::MAX));
                }
                Field::ReceivedAt => {
                    r.received_at = match map.next_value::<Option<&str>>()? {
                        None => None,
                        Some(text) => {
                            Some(crate::time::parse_rfc3339(text).map_err(|_| give_up())?)
                        }
                    };
                }
                Field::Provenance => r.provenance = map.next_value::<Option<Provenance>>()?,
                _ => return Err(give_up()),
            }
        }
        // Required, or a default, or nothing: what this line did not give.
        if !(seen.has(Field::Time) && seen.has(Field::Actor)) {
            return Err(give_up());
        }
        if !org_given {
            r.org_id.clear();
            if let Some(org) = self.default_org {
                r.org_id.push_str(org);
            }
        }
        if !seen.has(Field::Id) {
            r.id = None;
        }
        if !seen.has(Field::Action) {
            r.action.clear();
        }
        if !seen.has(Field::Target) {
            r.target = None;
        }
        if !seen.has(Field::Repository) {
            r.repository = None;
        }
        if !seen.has(Field::Outcome) {
            r.outcome = Outcome::default();
        }
        if !seen.has(Field::Message) {
            r.message = None;
        }
        if !seen.has(Field::Metadata) {
            MetadataInto(&mut r.metadata).reset();
        }
        if !seen.has(Field::SchemaVersion) {
            r.schema_version = SCHEMA_VERSION;
        }
        if !seen.has(Field::ReceivedAt) {
            r.received_at = None;
        }
        if !seen.has(Field::Provenance) {
            r.provenance = None;
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
        let mut seen = Seen::default();
        while let Some(key) = map.next_key::<&str>()? {
            let field = Field::from_key(Object::Actor, key).ok_or_else(give_up)?;
            seen.once(field)?;
            match field {
                Field::ActorId => {
                    str_or_null(&mut map, &mut a.id)?;
                }
                Field::ActorName => {
                    map.next_value_seed(OptStrInto(&mut a.name))?;
                }
                Field::ActorEmail => {
                    map.next_value_seed(OptStrInto(&mut a.email))?;
                }
                Field::ActorKind => {
                    a.kind = match map.next_value::<Option<&str>>()? {
                        None => ActorKind::default(),
                        Some(s) => ActorKind::parse(s).ok_or_else(give_up)?,
                    };
                }
                _ => return Err(give_up()),
            }
        }
        if !seen.has(Field::ActorId) {
            a.id.clear();
        }
        if !seen.has(Field::ActorName) {
            a.name = None;
        }
        if !seen.has(Field::ActorEmail) {
            a.email = None;
        }
        if !seen.has(Field::ActorKind) {
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
        let mut seen = Seen::default();
        while let Some(key) = map.next_key::<&str>()? {
            let field = Field::from_key(Object::Target, key).ok_or_else(give_up)?;
            seen.once(field)?;
            match field {
                Field::TargetKind => {
                    // Required: null is refused as missing.
                    let s = map.next_value::<&str>()?;
                    t.kind = TargetKind::parse(s).ok_or_else(give_up)?;
                }
                Field::TargetId => {
                    map.next_value_seed(OptStrInto(&mut t.id))?;
                }
                Field::TargetName => {
                    map.next_value_seed(OptStrInto(&mut t.name))?;
                }
                _ => return Err(give_up()),
            }
        }
        if !seen.has(Field::TargetKind) {
            return Err(give_up());
        }
        if !seen.has(Field::TargetId) {
            t.id = None;
        }
        if !seen.has(Field::TargetName) {
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
        let mut seen = Seen::default();
        while let Some(key) = map.next_key::<&str>()? {
            let field = Field::from_key(Object::Metadata, key);
            if let Some(field) = field {
                seen.once(field)?;
            }
            match field {
                Some(Field::MetadataIp) => {
                    map.next_value_seed(OptStrInto(&mut m.ip))?;
                }
                Some(Field::MetadataUserAgent) => {
                    map.next_value_seed(OptStrInto(&mut m.user_agent))?;
                }
                Some(Field::MetadataScanType) => {
                    map.next_value_seed(OptStrInto(&mut m.scan_type))?;
                }
                Some(Field::MetadataChanges) => {
                    m.changes = map
                        .next_value_seed(OptionSeed(ChangesSeed))?
                        .unwrap_or_default();
                }
                Some(_) => return Err(give_up()),
                None => {
                    let value = map.next_value::<Value>()?;
                    if m.extra.insert(key.to_string(), value).is_some() {
                        return Err(give_up());
                    }
                }
            }
        }
        if !seen.has(Field::MetadataIp) {
            m.ip = None;
        }
        if !seen.has(Field::MetadataUserAgent) {
            m.user_agent = None;
        }
        if !seen.has(Field::MetadataScanType) {
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
        // A change's keys (not fields of the table: they only nest in `metadata.changes`).
        let mut seen = 0u8;
        let mut once = |bit: u8| {
            if seen & bit != 0 {
                return Err(give_up());
            }
            seen |= bit;
            Ok(())
        };
        let (mut field, mut old, mut new) = (None, Value::Null, Value::Null);
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                "field" => {
                    once(1)?;
                    field = map.next_value::<Option<String>>()?;
                }
                "old" => {
                    once(2)?;
                    old = map.next_value()?;
                }
                "new" => {
                    once(4)?;
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
