//! What both formats need to write JSON: a key set, a field's value as plain JSON, the IP check.

use crate::schema::FieldValue;
use crate::time::format_rfc3339;
use serde_json::{Map, Value};

pub(super) fn put(m: &mut Map<String, Value>, key: &str, v: impl Into<Value>) {
    m.insert(key.into(), v.into());
}

/// Whether `s` is an IP address as OCSF's `ip_t` and ECS's `ip` take it (IPv4 dotted quad or
/// IPv6 text).
pub(super) fn is_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

/// A field's value as plain JSON.
pub(super) fn plain(v: FieldValue<'_>) -> Value {
    match v {
        FieldValue::Text(s) => s.into(),
        FieldValue::Time(t) => format_rfc3339(&t).into(),
        FieldValue::Count(n) => n.into(),
        FieldValue::Changes(c) => serde_json::to_value(c).unwrap_or(Value::Null),
        FieldValue::Provenance(p) => serde_json::to_value(p).unwrap_or(Value::Null),
    }
}
