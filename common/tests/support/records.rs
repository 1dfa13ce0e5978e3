//! Proptest strategies for emit lines: valid records as JSON, and near-records (a valid record
//! with one thing wrong). Shared by the property tests of common and the agent (included with
//! `#[path]`, so both generate the same inputs). The larger strategies are boxed: their value
//! trees, kept on the stack, overflow a test thread's 2 MiB in debug builds.
#![allow(dead_code)]

use codestax_common::{ActorKind, CATALOG, Outcome, Rules, TargetKind, parse_json_line};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// The "now" every generated record is checked against: times are generated around it.
pub const NOW: &str = "2026-11-27T12:00:00Z";

/// The rules the generated records are valid under (`custom`: custom actions allowed too).
pub fn rules(custom: bool) -> Rules {
    Rules {
        allow_custom_actions: custom,
        ..Rules::at(codestax_common::time::parse_rfc3339(NOW).unwrap())
    }
}

/// Text of every kind: plain words, any non-control characters, escapes and odd code points.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9 ._/:@-]{0,24}",
        2 => "\\PC{0,16}",
        1 => prop::collection::vec(any::<char>(), 0..8).prop_map(|c| c.into_iter().collect()),
        1 => Just("\"\\\u{0}\u{1f}\u{7f}\u{2028}\u{feff}😀".to_string()),
    ]
}

/// An id the rules accept from an app: 1 to 128 bytes, no control characters, not in the
/// collector's reserved namespace.
pub fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9._:-]{1,40}",
        1 => "[^\\p{Cc}]{1,32}".prop_filter("at most 128 bytes", |s| s.len() <= 128),
    ]
    .prop_filter("not the collector's reserved ids", |s| {
        !s.to_ascii_lowercase()
            .starts_with(codestax_common::RESERVED_ID_PREFIX)
    })
}

/// A JSON value of any shape, nested up to a few levels (integers kept within i64).
pub fn json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A time within the accepted range, in RFC 3339 with any offset and 0 to 9 fraction digits.
pub fn time() -> impl Strategy<Value = String> {
    // 2000-01-01 .. NOW + 23h, in seconds.
    (
        946_684_800i64..1_764_327_600 + 23 * 3600,
        0u32..1_000_000_000,
        prop::sample::select(vec![0usize, 3, 6, 9]),
        -(14 * 60)..=(14 * 60i32),
        any::<bool>(),
    )
        .prop_map(|(secs, nanos, digits, offset_min, zulu)| {
            use chrono::{FixedOffset, SecondsFormat, TimeZone, Utc};
            let t = Utc.timestamp_opt(secs, nanos).unwrap();
            let format = match digits {
                0 => SecondsFormat::Secs,
                3 => SecondsFormat::Millis,
                6 => SecondsFormat::Micros,
                _ => SecondsFormat::Nanos,
            };
            if zulu {
                t.to_rfc3339_opts(format, true)
            } else {
                let offset = FixedOffset::east_opt(offset_min * 60).unwrap();
                t.with_timezone(&offset).to_rfc3339_opts(format, false)
            }
        })
}

fn email() -> impl Strategy<Value = String> {
    "[a-z0-9._+]{1,12}@[a-z0-9-]{1,10}(\\.[a-z0-9-]{1,8}){1,2}"
}

/// An action an app may send: the collector's own category is not one.
fn action(custom: bool) -> BoxedStrategy<String> {
    let apps = |a: &String| {
        a.split_once('.')
            .is_none_or(|(c, _)| c != codestax_common::COLLECTOR_CATEGORY)
    };
    let catalog = prop::sample::select(CATALOG.iter().map(|a| a.name).collect::<Vec<_>>())
        .prop_map(str::to_string)
        .prop_filter("an app's action", apps);
    if custom {
        prop_oneof![
            catalog,
            "[a-z][a-z0-9_]{0,10}\\.[a-z][a-z0-9_]{0,10}".prop_filter("an app's action", apps)
        ]
        .boxed()
    } else {
        catalog.boxed()
    }
}

/// Inserts `value` under `key` when it is `Some`.
fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        map.insert(key.into(), v);
    }
}

fn actor() -> BoxedStrategy<Value> {
    (
        id(),
        proptest::option::of(text()),
        prop::sample::select(ActorKind::ALL.to_vec()),
        proptest::option::of(email()),
        any::<bool>(),
    )
        .prop_map(|(id, name, kind, email, kind_given)| {
            let mut a = Map::new();
            a.insert("id".into(), id.into());
            put(&mut a, "name", name.map(Value::from));
            // A user needs an email; the kind defaults to user.
            let email = match kind {
                ActorKind::User => Some(email.unwrap_or_else(|| "a@b.example".into())),
                _ => email,
            };
            put(&mut a, "email", email.map(Value::from));
            if kind_given || kind != ActorKind::User {
                a.insert("kind".into(), kind.as_str().into());
            }
            Value::Object(a)
        })
        .boxed()
}

fn target() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(TargetKind::ALL.to_vec()),
        proptest::option::of(id()),
        proptest::option::of(text()),
    )
        .prop_map(|(kind, id, name)| {
            let mut t = Map::new();
            t.insert("kind".into(), kind.as_str().into());
            put(&mut t, "id", id.map(Value::from));
            put(&mut t, "name", name.map(Value::from));
            Value::Object(t)
        })
}

fn ip() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|a| a.to_string()),
    ]
}

/// Metadata: the named fields, changes, and free-form keys of any JSON type. `dotted`: free-form
/// keys may contain dots.
fn metadata(dotted: bool) -> BoxedStrategy<Value> {
    let key = if dotted {
        "[a-z_.]{0,10}"
    } else {
        "[a-z_]{0,10}"
    };
    let change = ("[a-z_]{1,10}", json(), json())
        .prop_map(|(field, old, new)| json!({"field": field, "old": old, "new": new}));
    (
        proptest::option::of(ip()),
        proptest::option::of(text()),
        proptest::option::of("[a-z]{1,8}"),
        prop::collection::vec(change, 0..3),
        prop::collection::btree_map(key, json(), 0..4),
    )
        .prop_map(|(ip, ua, scan, changes, extra)| {
            let mut m = Map::new();
            put(&mut m, "ip", ip.map(Value::from));
            put(&mut m, "user_agent", ua.map(Value::from));
            put(&mut m, "scan_type", scan.map(Value::from));
            if !changes.is_empty() {
                m.insert("changes".into(), Value::Array(changes));
            }
            for (k, v) in extra {
                if !["ip", "user_agent", "scan_type", "changes"].contains(&k.as_str()) {
                    m.insert(k, v);
                }
            }
            Value::Object(m)
        })
        .boxed()
}

/// How a generated record may look.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Custom (non-catalog) actions.
    pub custom_actions: bool,
    /// Metadata keys with dots (which OTLP attributes cannot carry flat).
    pub dotted_keys: bool,
    /// `org_id` may be left out (the line then needs a default org).
    pub org_optional: bool,
}

impl Shape {
    pub const ANY: Shape = Shape {
        custom_actions: true,
        dotted_keys: true,
        org_optional: true,
    };
}

/// A record the rules of [`rules`]`(shape.custom_actions)` accept, as a JSON object.
pub fn valid_record(shape: Shape) -> BoxedStrategy<Value> {
    let parts = (
        (
            proptest::option::of(id()),
            "[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}",
            any::<bool>(),
            time(),
            actor(),
            action(shape.custom_actions),
            proptest::option::of(text()),
        ),
        (
            proptest::option::of(target()),
            proptest::option::of("[a-zA-Z0-9/_.-]{1,30}"),
            proptest::option::of(prop::sample::select(Outcome::ALL.to_vec())),
            proptest::option::of(text()),
            proptest::option::of(metadata(shape.dotted_keys)),
            any::<bool>(),
            proptest::option::of(time()),
            proptest::option::of(json()),
        ),
    );
    parts
        .prop_map(
            move |(
                (id, org, org_given, time, actor, action, category),
                (target, repo, outcome, message, metadata, version, received, chain),
            )| {
                let mut r = Map::new();
                put(&mut r, "id", id.map(Value::from));
                if org_given || !shape.org_optional {
                    r.insert("org_id".into(), org.into());
                }
                r.insert("time".into(), time.into());
                r.insert("actor".into(), actor);
                r.insert("action".into(), action.into());
                put(&mut r, "category", category.map(Value::from));
                put(&mut r, "target", target);
                put(&mut r, "repository", repo.map(Value::from));
                put(&mut r, "outcome", outcome.map(|o| o.as_str().into()));
                put(&mut r, "message", message.map(Value::from));
                put(&mut r, "metadata", metadata);
                if version {
                    r.insert("schema_version".into(), 1.into());
                }
                put(&mut r, "received_at", received.map(Value::from));
                // Chain fields are the collector's: dropped whatever they hold.
                if let Some(v) = chain {
                    r.insert("hash".into(), v);
                }
                Value::Object(r)
            },
        )
        .boxed()
}

/// Values that break a field: wrong types, empty, over-long, out-of-range, control characters.
fn odd_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::sample::select(vec![
            json!(null), json!(""), json!(0), json!(-1), json!(1.5), json!(true),
            json!(u64::MAX), json!(4_294_967_296u64), json!({}), json!([]), json!([1]),
            json!({"x": 1}), json!("x"), json!("a\u{0}b"), json!("user"), json!("failure"),
            json!("repository"), json!("scan.triggered"), json!("Bad Action"), json!("a@b.co"),
            json!("not an email"), json!("::1"), json!("999.1.1.1"), json!("1999-12-31T23:59:59Z"),
            json!("2030-01-01T00:00:00Z"), json!("2026-11-27"), json!("x".repeat(200)),
            json!("x".repeat(70 * 1024)),
        ]),
        1 => json(),
    ]
}

/// Every path (object keys, array indexes) of a JSON value.
fn paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(k.clone());
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(i.to_string());
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// Replaces (`Some`) or removes (`None`) the value at `path`.
fn edit(v: &mut Value, path: &[String], with: Option<Value>) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = v;
    for p in parents {
        at = match at {
            Value::Object(m) => m.get_mut(p).unwrap(),
            Value::Array(a) => &mut a[p.parse::<usize>().unwrap()],
            _ => unreachable!(),
        };
    }
    match (at, with) {
        (Value::Object(m), Some(w)) => {
            m.insert(last.clone(), w);
        }
        (Value::Object(m), None) => {
            m.remove(last);
        }
        (Value::Array(a), Some(w)) => a[last.parse::<usize>().unwrap()] = w,
        (Value::Array(a), None) => {
            a.remove(last.parse::<usize>().unwrap());
        }
        _ => {}
    }
}

/// One change that may make a record invalid (or not: removing an optional field).
#[derive(Debug, Clone)]
enum Mutation {
    Remove(prop::sample::Index),
    Replace(prop::sample::Index, Value),
    AddKey(prop::sample::Index, String, Value),
    /// A key given twice in the text (JSON keeps the last; the fast paths must not differ).
    DuplicateKey(prop::sample::Index, Value),
    Truncate(prop::sample::Index),
    InsertByte(prop::sample::Index, u8),
    FlipBit(prop::sample::Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        2 => index().prop_map(Mutation::Remove),
        4 => (index(), odd_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        1 => (index(), "[a-z_]{1,8}", odd_value()).prop_map(|(i, k, v)| Mutation::AddKey(i, k, v)),
        1 => (index(), odd_value()).prop_map(|(i, v)| Mutation::DuplicateKey(i, v)),
        1 => index().prop_map(Mutation::Truncate),
        1 => (index(), any::<u8>()).prop_map(|(i, b)| Mutation::InsertByte(i, b)),
        1 => (index(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
    ]
}

fn apply(mut v: Value, m: Mutation) -> Vec<u8> {
    let mut all = Vec::new();
    paths(&v, &mut Vec::new(), &mut all);
    let pick = |i: &prop::sample::Index| all[i.index(all.len())].clone();
    match m {
        Mutation::Remove(i) => {
            edit(&mut v, &pick(&i), None);
            v.to_string().into_bytes()
        }
        Mutation::Replace(i, w) => {
            edit(&mut v, &pick(&i), Some(w));
            v.to_string().into_bytes()
        }
        Mutation::AddKey(i, k, w) => {
            // Into the record itself or into one of its objects.
            let mut objects: Vec<Vec<String>> = all
                .iter()
                .filter(|p| p.len() == 1 && matches!(v[&p[0]], Value::Object(_)))
                .cloned()
                .collect();
            objects.push(Vec::new());
            let mut parent = objects[i.index(objects.len())].clone();
            parent.push(k);
            edit(&mut v, &parent, Some(w));
            v.to_string().into_bytes()
        }
        Mutation::DuplicateKey(i, w) => {
            let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            let key = &keys[i.index(keys.len())];
            let text = v.to_string();
            format!("{{{}:{w},{}", Value::from(key.as_str()), &text[1..]).into_bytes()
        }
        Mutation::Truncate(i) => {
            let mut b = v.to_string().into_bytes();
            b.truncate(i.index(b.len()));
            b
        }
        Mutation::InsertByte(i, byte) => {
            let mut b = v.to_string().into_bytes();
            let at = i.index(b.len() + 1);
            b.insert(at, byte);
            b
        }
        Mutation::FlipBit(i, bit) => {
            let mut b = v.to_string().into_bytes();
            let at = i.index(b.len());
            b[at] ^= 1 << bit;
            b
        }
    }
}

/// A valid record with one change (one to three, now and then), as line bytes.
pub fn near_record(shape: Shape) -> BoxedStrategy<Vec<u8>> {
    near(valid_record(shape))
}

/// A record of `records` with one change (one to three, now and then), as line bytes.
pub fn near(records: BoxedStrategy<Value>) -> BoxedStrategy<Vec<u8>> {
    (records, prop::collection::vec(mutation(), 1..=3), 0u8..4)
        .prop_map(|(v, mutations, extra)| {
            let mut bytes = apply(v, mutations[0].clone());
            for m in mutations.into_iter().skip(1).take(extra as usize) {
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(v @ Value::Object(_)) => bytes = apply(v, m),
                    _ => break,
                }
            }
            bytes
        })
        .boxed()
}

/// A line as `parse_json_line` takes it: one of the above, or any bytes.
pub fn any_line(shape: Shape) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => valid_record(shape).prop_map(|v| v.to_string().into_bytes()),
        6 => near_record(shape),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

/// The default case count, unless `PROPTEST_CASES` says otherwise (for the long runs).
pub fn cases(n: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = n;
    }
    config
}

/// What the thorough path of `parse_json_line` gives, built from public parts only:
/// a `serde_json::Value` (the default org filled in) through `record_from_value`.
pub fn thorough(
    line: &[u8],
    default_org: Option<&str>,
    rules: &Rules,
) -> Result<codestax_common::AuditRecord, codestax_common::RecordErrors> {
    use codestax_common::RecordErrors;
    if line.len() > rules.max_record_bytes.saturating_mul(4) {
        // Refused by size before parsing: `parse_json_line` says so itself.
        return parse_json_line(line, default_org, rules);
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return parse_json_line(line, default_org, rules);
    };
    let mut value: Value = serde_json::from_str(text)
        .map_err(|e| RecordErrors::one("record", format!("not valid JSON: {e}")))?;
    if let (Value::Object(map), Some(org)) = (&mut value, default_org)
        && matches!(map.get("org_id"), None | Some(Value::Null))
    {
        map.insert("org_id".into(), Value::String(org.to_string()));
    }
    codestax_common::record_from_value(value, rules)
}
