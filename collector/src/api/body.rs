//! JSON request bodies of the control routes (keys, settings): read within a limit, refused with
//! a 400 naming the key when any object repeats a key (serde would silently keep the last one),
//! then deserialised.

use super::ApiError;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use codestax_otlp_receiver::body::read_body;
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::HashSet;
use std::fmt;

/// Largest JSON body of a control route, in bytes (413 above).
pub const MAX_CONTROL_BODY_BYTES: usize = 64 * 1024;

/// Reads a JSON body of at most `limit` bytes (gzip inflated to the same limit) into `T`.
/// `expected` describes the body for the error message of a malformed one.
pub async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    expected: &str,
) -> Result<T, ApiError> {
    let bytes = read_body(headers, body, limit, limit).await?;
    parse_json(&bytes, expected)
}

/// Parses a JSON body into `T`, refusing duplicate keys at any depth.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8], expected: &str) -> Result<T, ApiError> {
    let malformed = |e: serde_json::Error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_request",
            format!("expected {expected}: {e}"),
        )
        .with_field("body")
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match (UniqueKeys { path: "" }).deserialize(&mut de) {
        Ok(None) => {}
        Ok(Some(path)) => {
            return Err(ApiError::invalid(
                path.clone(),
                format!("duplicate key {path:?}: each key may appear once"),
            ));
        }
        Err(e) => return Err(malformed(e)),
    }
    serde_json::from_slice(bytes).map_err(malformed)
}

/// Walks one JSON value; yields the path of the first repeated key, if any. Path segments are
/// joined with `.`, array positions as `[i]`.
struct UniqueKeys<'p> {
    path: &'p str,
}

impl<'de> DeserializeSeed<'de> for UniqueKeys<'_> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl UniqueKeys<'_> {
    fn child(&self, segment: &str) -> String {
        match (self.path.is_empty(), segment.starts_with('[')) {
            (true, _) | (false, true) => format!("{}{segment}", self.path),
            (false, false) => format!("{}.{segment}", self.path),
        }
    }
}

impl<'de> Visitor<'de> for UniqueKeys<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = HashSet::new();
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            let path = self.child(&key);
            let inner = map.next_value_seed(UniqueKeys { path: &path })?;
            if found.is_none() {
                found = if seen.insert(key) { inner } else { Some(path) };
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut i = 0usize;
        loop {
            let path = self.child(&format!("[{i}]"));
            match seq.next_element_seed(UniqueKeys { path: &path })? {
                None => return Ok(found),
                Some(inner) => found = found.or(inner),
            }
            i += 1;
        }
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn field_of(body: &str) -> Option<String> {
        parse_json::<Value>(body.as_bytes(), "JSON").err()?.field
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth_naming_the_key() {
        assert_eq!(
            field_of(r#"{"days":400,"days":1}"#).as_deref(),
            Some("days")
        );
        assert_eq!(
            field_of(r#"{"a":{"b":1,"c":{"d":1,"d":2}}}"#).as_deref(),
            Some("a.c.d")
        );
        assert_eq!(
            field_of(r#"{"a":[{"x":1},{"x":1,"x":2}]}"#).as_deref(),
            Some("a[1].x")
        );
        // An escaped key is the same key.
        assert_eq!(
            field_of(r#"{"days":1,"d\u0061ys":2}"#).as_deref(),
            Some("days")
        );
        assert_eq!(
            field_of(r#"{"a":{"x":1},"b":{"x":1},"c":[1,"x",null]}"#),
            None
        );
        assert_eq!(field_of("{not json").as_deref(), Some("body"));
    }
}
