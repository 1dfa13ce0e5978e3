//! Canonical JSON: object keys in byte order, no insignificant whitespace. The same record always
//! encodes to the same bytes whatever order its fields came in, so the encoding can be hashed.

use crate::record::AuditRecord;
use serde_json::Value;

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
        // Numbers, booleans and null have one serde_json spelling each.
        other => out.push_str(&other.to_string()),
    }
}

pub(crate) fn write_string(s: &str, out: &mut String) {
    // serde_json's string escaping is deterministic; reuse it rather than writing another.
    out.push_str(&Value::String(s.to_owned()).to_string());
}

impl AuditRecord {
    /// The record as canonical JSON: the form that is stored, hashed and size-checked.
    pub fn canonical_json(&self) -> String {
        let value = serde_json::to_value(self).expect("an AuditRecord always serialises");
        to_canonical_json(&value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
