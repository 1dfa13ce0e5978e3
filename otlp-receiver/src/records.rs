//! The log records of an encoded export request, decoded one at a time.
//!
//! Decoding a whole `ExportLogsServiceRequest` costs up to ~180× its size when its fields are
//! tiny: an empty LogRecord is 2 bytes on the wire and a ~200-byte struct in a doubling `Vec`.
//! [`Logs::for_each`] walks the request's framing instead (resource logs → scope logs → log
//! records) and decodes one LogRecord at a time, handed to the sink and dropped, so a request
//! costs the records the sink keeps plus one LogRecord. A LogRecord or Resource larger than the
//! sink's part limit is not decoded at all: its records are rejected, as an emit line far over
//! the record limit is. A LogRecord that does not decode is rejected alone; only a request whose
//! framing is broken is refused whole.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

use crate::Refusal;

/// An export request's body, decoded from its transport encoding (gzip undone).
#[derive(Debug, Clone, Copy)]
pub enum Logs<'a> {
    /// `ExportLogsServiceRequest` in protobuf (OTLP/gRPC, `application/x-protobuf`).
    Protobuf(&'a [u8]),
    /// `ExportLogsServiceRequest` in OTLP/JSON.
    Json(&'a [u8]),
}

/// One LogRecord of a request, as [`Logs::for_each`] hands it over.
#[derive(Debug)]
pub struct LogItem<'a> {
    /// 1-based position across the request, over every LogRecord: what rejections name.
    pub position: usize,
    /// The enclosing Resource's attributes (none when it could not be read).
    pub resource: &'a [KeyValue],
    /// The record, or why it was not read.
    pub log: Result<LogRecord, Unread>,
}

/// Why a LogRecord was not read; the sink rejects it and takes the rest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unread {
    #[error("LogRecord of {bytes} bytes, over the limit of {max} bytes; not decoded")]
    TooLarge { bytes: usize, max: usize },
    #[error("malformed LogRecord: {0}")]
    Malformed(String),
    #[error("its Resource of {bytes} bytes is over the limit of {max} bytes; not decoded")]
    ResourceTooLarge { bytes: usize, max: usize },
    #[error("its Resource is malformed: {0}")]
    ResourceMalformed(String),
}

impl Logs<'_> {
    /// Calls `f` with every LogRecord of the request, in order. LogRecords and Resources over
    /// `max_part_bytes` as encoded are handed over as [`Unread`]. Refused (and nothing of it
    /// should be kept) when the request's framing is not an `ExportLogsServiceRequest`; `f` may
    /// have been called for the records before the fault.
    pub fn for_each(
        self,
        max_part_bytes: usize,
        mut f: impl FnMut(LogItem<'_>),
    ) -> Result<(), Refusal> {
        let mut walk = Walk {
            max: max_part_bytes,
            position: 0,
            f: &mut f,
        };
        match self {
            Logs::Protobuf(bytes) => walk
                .protobuf(bytes)
                .map_err(|e| Refusal::invalid(format!("malformed OTLP protobuf: {e}"))),
            Logs::Json(bytes) => walk
                .json(bytes)
                .map_err(|e| Refusal::invalid(format!("malformed OTLP JSON: {e}"))),
        }
    }
}

struct Walk<'f> {
    max: usize,
    position: usize,
    f: &'f mut dyn FnMut(LogItem<'_>),
}

impl Walk<'_> {
    /// Hands over one LogRecord under `resource`: `encoded` is its size as sent (protobuf bytes or
    /// JSON text), `decode` reads it if the resource was read and the size is within the limit.
    fn record(
        &mut self,
        resource: &Result<Resource, Unread>,
        encoded: usize,
        decode: impl FnOnce() -> Result<LogRecord, String>,
    ) {
        self.position += 1;
        let log = match resource {
            Err(unread) => Err(unread.clone()),
            Ok(_) if encoded > self.max => Err(Unread::TooLarge {
                bytes: encoded,
                max: self.max,
            }),
            Ok(_) => decode().map_err(Unread::Malformed),
        };
        let attributes = resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        (self.f)(LogItem {
            position: self.position,
            resource: attributes,
            log,
        });
    }

    fn resource_too_large(&self, bytes: usize) -> Result<Resource, Unread> {
        Err(Unread::ResourceTooLarge {
            bytes,
            max: self.max,
        })
    }
}

// Protobuf: ExportLogsServiceRequest { resource_logs = 1 }, ResourceLogs { resource = 1,
// scope_logs = 2 }, ScopeLogs { log_records = 2 }; every other field is skipped.

impl Walk<'_> {
    fn protobuf(&mut self, request: &[u8]) -> Result<(), String> {
        for field in Fields(request) {
            if let (1, value) = field? {
                self.resource_logs(value.message("resource_logs")?)?;
            }
        }
        Ok(())
    }

    fn resource_logs(&mut self, resource_logs: &[u8]) -> Result<(), String> {
        // The Resource applies to every record whatever the field order; repeated, it merges.
        let mut parts = Vec::new();
        for field in Fields(resource_logs) {
            if let (1, value) = field? {
                parts.push(value.message("resource")?);
            }
        }
        let bytes: usize = parts.iter().map(|p| p.len()).sum();
        let resource = if bytes > self.max {
            self.resource_too_large(bytes)
        } else {
            let mut resource = Resource::default();
            parts
                .into_iter()
                .try_for_each(|part| resource.merge(part))
                .map(|()| resource)
                .map_err(|e| Unread::ResourceMalformed(e.to_string()))
        };
        for field in Fields(resource_logs) {
            if let (2, value) = field? {
                for field in Fields(value.message("scope_logs")?) {
                    if let (2, value) = field? {
                        let log = value.message("log_records")?;
                        self.record(&resource, log.len(), || {
                            LogRecord::decode(log).map_err(|e| e.to_string())
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// A field's value: a length-delimited one's bytes, or another wire type's (skipped).
enum Value<'a> {
    Bytes(&'a [u8]),
    Other(WireType),
}

impl<'a> Value<'a> {
    /// The bytes of a message field named `name`.
    fn message(self, name: &str) -> Result<&'a [u8], String> {
        match self {
            Value::Bytes(bytes) => Ok(bytes),
            Value::Other(wire_type) => Err(format!(
                "{name}: wire type {wire_type:?}, expected LengthDelimited"
            )),
        }
    }
}

/// The fields of an encoded message as (tag, value); after an error, nothing.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            self.0 = &[];
        }
        Some(field)
    }
}

impl<'a> Fields<'a> {
    fn field(&mut self) -> Result<(u32, Value<'a>), String> {
        let (tag, wire_type) = decode_key(&mut self.0).map_err(|e| e.to_string())?;
        if wire_type != WireType::LengthDelimited {
            skip_field(wire_type, tag, &mut self.0, DecodeContext::default())
                .map_err(|e| e.to_string())?;
            return Ok((tag, Value::Other(wire_type)));
        }
        let len = decode_varint(&mut self.0).map_err(|e| e.to_string())?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= self.0.len())
            .ok_or_else(|| {
                format!(
                    "field {tag}: length {len} past the end of its message ({} bytes left)",
                    self.0.len()
                )
            })?;
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok((tag, Value::Bytes(bytes)))
    }
}

// OTLP/JSON: {"resourceLogs": [{"resource": {...}, "scopeLogs": [{"logRecords": [...]}]}]};
// other keys are ignored, as the derived decoding of the whole request ignores them.

impl Walk<'_> {
    fn json(&mut self, request: &[u8]) -> Result<(), serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(request);
        de::Deserializer::deserialize_map(&mut de, RequestSeed(self))?;
        de.end()
    }

    /// A `resource` as it stands in the input (`null` is none).
    fn json_resource(&self, raw: &RawValue) -> Result<Resource, Unread> {
        let json = raw.get();
        if json.len() > self.max {
            return self.resource_too_large(json.len());
        }
        serde_json::from_str::<Option<Resource>>(json)
            .map(Option::unwrap_or_default)
            .map_err(|e| Unread::ResourceMalformed(e.to_string()))
    }
}

/// `ExportLogsServiceRequest`: its `resourceLogs`.
struct RequestSeed<'w, 'f>(&'w mut Walk<'f>);

impl<'de> Visitor<'de> for RequestSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an ExportLogsServiceRequest object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(key) = map.next_key::<String>()? {
            if key != "resourceLogs" {
                map.next_value::<IgnoredAny>()?;
            } else if std::mem::replace(&mut seen, true) {
                return Err(de::Error::duplicate_field("resourceLogs"));
            } else {
                map.next_value_seed(ResourceLogsArray(&mut *self.0))?;
            }
        }
        Ok(())
    }
}

/// A `resourceLogs` array.
struct ResourceLogsArray<'w, 'f>(&'w mut Walk<'f>);

impl<'de> DeserializeSeed<'de> for ResourceLogsArray<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ResourceLogsArray<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of ResourceLogs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(ResourceLogsSeed(&mut *self.0))?
            .is_some()
        {}
        Ok(())
    }
}

/// A `ResourceLogs` object: its `scopeLogs` under its Resource, wherever the Resource stands
/// (`scopeLogs` before it is kept as it stands in the input, and walked at the object's end).
struct ResourceLogsSeed<'w, 'f>(&'w mut Walk<'f>);

impl<'de> DeserializeSeed<'de> for ResourceLogsSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ResourceLogsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a ResourceLogs object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let walk = self.0;
        let mut resource = None;
        let mut scope_logs_seen = false;
        let mut scope_logs_before = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "resource" if resource.is_some() => {
                    return Err(de::Error::duplicate_field("resource"));
                }
                "resource" => {
                    let raw = map.next_value::<&'de RawValue>()?;
                    resource = Some(walk.json_resource(raw));
                }
                "scopeLogs" if std::mem::replace(&mut scope_logs_seen, true) => {
                    return Err(de::Error::duplicate_field("scopeLogs"));
                }
                "scopeLogs" => match &resource {
                    Some(resource) => map.next_value_seed(ScopeLogsArray(&mut *walk, resource))?,
                    None => scope_logs_before = Some(map.next_value::<&'de RawValue>()?),
                },
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if let Some(raw) = scope_logs_before {
            let resource = resource.unwrap_or_else(|| Ok(Resource::default()));
            let mut de = serde_json::Deserializer::from_str(raw.get());
            ScopeLogsArray(walk, &resource)
                .deserialize(&mut de)
                .map_err(de::Error::custom)?;
        }
        Ok(())
    }
}

/// A `scopeLogs` array under its Resource.
struct ScopeLogsArray<'w, 'f, 'r>(&'w mut Walk<'f>, &'r Result<Resource, Unread>);

impl<'de> DeserializeSeed<'de> for ScopeLogsArray<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ScopeLogsArray<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of ScopeLogs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(ScopeLogsSeed(&mut *self.0, self.1))?
            .is_some()
        {}
        Ok(())
    }
}

/// A `ScopeLogs` object: its `logRecords`.
struct ScopeLogsSeed<'w, 'f, 'r>(&'w mut Walk<'f>, &'r Result<Resource, Unread>);

impl<'de> DeserializeSeed<'de> for ScopeLogsSeed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ScopeLogsSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a ScopeLogs object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(key) = map.next_key::<String>()? {
            if key != "logRecords" {
                map.next_value::<IgnoredAny>()?;
            } else if std::mem::replace(&mut seen, true) {
                return Err(de::Error::duplicate_field("logRecords"));
            } else {
                map.next_value_seed(LogRecordsArray(&mut *self.0, self.1))?;
            }
        }
        Ok(())
    }
}

/// A `logRecords` array: each element measured as it stands, then decoded on its own.
struct LogRecordsArray<'w, 'f, 'r>(&'w mut Walk<'f>, &'r Result<Resource, Unread>);

impl<'de> DeserializeSeed<'de> for LogRecordsArray<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for LogRecordsArray<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of LogRecords")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            let json = raw.get();
            self.0.record(self.1, json.len(), || {
                serde_json::from_str::<LogRecord>(json).map_err(|e| e.to_string())
            });
        }
        Ok(())
    }
}
