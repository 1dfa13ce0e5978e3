//! Validators over the pinned copies of the published schemas in `tests/schemas/` (see the
//! README there): an OCSF event against its class (attributes resolved through `extends`,
//! included profiles and the dictionary), an ECS document against `ecs_flat`. They read the
//! schemas' own files; nothing of the mapping under test is used here.
#![allow(dead_code)]

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// `common/tests/schemas`, from common's tests or from another crate of the workspace that
/// includes this file (`tests/`).
fn schemas_dir() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [
        here.join("tests/schemas"),
        here.join("../common/tests/schemas"),
    ]
    .into_iter()
    .find(|d| d.join("ocsf").is_dir())
    .expect("the pinned schemas in common/tests/schemas")
}

fn read_json(path: &PathBuf) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One attribute of a class or object, merged along `extends` and included profiles.
#[derive(Debug, Clone, Default)]
struct Attr {
    requirement: Option<String>,
    /// The profile that brings the attribute, if one does.
    profile: Option<String>,
    /// Enum values given at this level (merged with the dictionary's).
    enum_keys: BTreeSet<String>,
    enum_captions: BTreeMap<String, String>,
}

/// A class or an object with everything it inherits.
#[derive(Debug, Clone, Default)]
struct Resolved {
    name: String,
    attrs: BTreeMap<String, Attr>,
    at_least_one: Vec<String>,
    just_one: Vec<String>,
    category: Option<String>,
}

/// The pinned OCSF schema.
pub struct Ocsf {
    dir: PathBuf,
    pub version: String,
    dictionary: Map<String, Value>,
    types: Map<String, Value>,
    categories: Map<String, Value>,
    /// class_uid → the class's file, below `events/`.
    classes: BTreeMap<u64, String>,
    /// Files read so far, by path below the schema dir.
    files: std::sync::Mutex<BTreeMap<String, Value>>,
    /// The types' patterns, compiled once.
    patterns: std::sync::Mutex<BTreeMap<String, regex::Regex>>,
}

impl Ocsf {
    pub fn load() -> Ocsf {
        let dir = schemas_dir().join("ocsf");
        let version = read_json(&dir.join("version.json"))["version"]
            .as_str()
            .unwrap()
            .to_string();
        let dict = read_json(&dir.join("dictionary.json"));
        let dictionary = dict["attributes"].as_object().unwrap().clone();
        let types = dict["types"]["attributes"].as_object().unwrap().clone();
        let categories = read_json(&dir.join("categories.json"))["attributes"]
            .as_object()
            .unwrap()
            .clone();
        let mut o = Ocsf {
            dir,
            version,
            dictionary,
            types,
            categories,
            classes: BTreeMap::new(),
            files: Default::default(),
            patterns: Default::default(),
        };
        for cat in std::fs::read_dir(o.dir.join("events")).unwrap() {
            let cat = cat.unwrap().path();
            if !cat.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&cat).unwrap() {
                let f = f.unwrap().path();
                let rel = f.strip_prefix(o.dir.join("events")).unwrap();
                let rel = rel.to_str().unwrap().trim_end_matches(".json").to_string();
                let d = read_json(&f);
                if let Some(uid) = d["uid"].as_u64() {
                    let class = o.resolve_class(&rel);
                    let cat = class.category.clone().expect("a class has a category");
                    let cat_uid = o.categories[&cat]["uid"].as_u64().unwrap();
                    o.classes.insert(cat_uid * 1000 + uid, rel);
                }
            }
        }
        o
    }

    /// The class uids the pinned copy has.
    pub fn class_uids(&self) -> Vec<u64> {
        self.classes.keys().copied().collect()
    }

    /// The file at `rel` (below the schema dir), read once.
    fn file(&self, rel: &str) -> Value {
        let mut files = self.files.lock().unwrap();
        files
            .entry(rel.to_string())
            .or_insert_with(|| read_json(&self.dir.join(rel)))
            .clone()
    }

    /// Merges the attributes of the file at `rel` (below the schema dir) into `into`.
    fn merge_file(&self, rel: &str, into: &mut Resolved) {
        let d = self.file(rel);
        let attrs = d["attributes"].as_object().cloned().unwrap_or_default();
        if let Some(includes) = attrs.get("$include").and_then(Value::as_array) {
            for inc in includes {
                let inc = inc.as_str().unwrap();
                let p = self.file(inc);
                let profile = p["name"].as_str().unwrap().to_string();
                for (k, v) in p["attributes"].as_object().unwrap() {
                    let a = into.attrs.entry(k.clone()).or_default();
                    merge_attr(a, v);
                    if a.profile.is_none() {
                        a.profile = Some(profile.clone());
                    }
                }
            }
        }
        for (k, v) in &attrs {
            if k == "$include" {
                continue;
            }
            let a = into.attrs.entry(k.clone()).or_default();
            merge_attr(a, v);
            if let Some(p) = v.get("profile") {
                a.profile = p.as_str().map(str::to_string);
            }
        }
        if let Some(c) = d.get("constraints") {
            if let Some(l) = c.get("at_least_one").and_then(Value::as_array) {
                into.at_least_one = l.iter().map(|s| s.as_str().unwrap().into()).collect();
            }
            if let Some(l) = c.get("just_one").and_then(Value::as_array) {
                into.just_one = l.iter().map(|s| s.as_str().unwrap().into()).collect();
            }
        }
        if let Some(c) = d.get("category").and_then(Value::as_str) {
            into.category = Some(c.into());
        }
        into.name = d["name"].as_str().unwrap_or_default().into();
    }

    /// A class (`iam/authentication`) with its parents' attributes.
    fn resolve_class(&self, rel: &str) -> Resolved {
        let d = self.file(&format!("events/{rel}.json"));
        let mut r = match d.get("extends").and_then(Value::as_str) {
            None => Resolved::default(),
            Some(parent) => {
                let cat = rel.rsplit_once('/').map(|(c, _)| c).unwrap_or("");
                let sibling = format!("{cat}/{parent}");
                if !cat.is_empty() && self.dir.join(format!("events/{sibling}.json")).exists() {
                    self.resolve_class(&sibling)
                } else {
                    self.resolve_class(parent)
                }
            }
        };
        self.merge_file(&format!("events/{rel}.json"), &mut r);
        r
    }

    fn class_caption(&self, rel: &str) -> String {
        self.file(&format!("events/{rel}.json"))["caption"]
            .as_str()
            .unwrap()
            .into()
    }

    fn resolve_object(&self, name: &str) -> Result<Resolved, String> {
        let rel = format!("objects/{name}.json");
        if !self.dir.join(&rel).exists() {
            return Err(format!(
                "object {name} is not in the pinned copy (add it to refresh.py)"
            ));
        }
        let d = self.file(&rel);
        let mut r = match d.get("extends").and_then(Value::as_str) {
            None => Resolved::default(),
            Some(parent) => self.resolve_object(parent)?,
        };
        self.merge_file(&rel, &mut r);
        Ok(r)
    }

    /// Every way `event` breaks the schema; empty when it is valid.
    pub fn validate(&self, event: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        let Some(class_uid) = event["class_uid"].as_u64() else {
            return vec!["class_uid missing or not a number".into()];
        };
        let Some(rel) = self.classes.get(&class_uid) else {
            return vec![format!(
                "class_uid {class_uid} is not a class of the schema"
            )];
        };
        let mut class = self.resolve_class(rel);
        let cat = class.category.clone().unwrap();
        let cat_uid = self.categories[&cat]["uid"].as_u64().unwrap();
        // As the schema's compiler does: a class's class_uid and category_uid enums are its own
        // uids (base_event's say 0).
        for (attr, uid, caption) in [
            ("class_uid", class_uid, self.class_caption(rel)),
            (
                "category_uid",
                cat_uid,
                self.categories[&cat]["caption"].as_str().unwrap().into(),
            ),
        ] {
            let a = class.attrs.get_mut(attr).unwrap();
            a.enum_keys = BTreeSet::from([uid.to_string()]);
            a.enum_captions = BTreeMap::from([(uid.to_string(), caption)]);
        }
        if event["category_uid"].as_u64() != Some(cat_uid) {
            errors.push(format!(
                "category_uid {} is not {cat_uid} ({cat}) of class {class_uid}",
                event["category_uid"]
            ));
        }
        match (event["activity_id"].as_u64(), event["type_uid"].as_u64()) {
            (Some(a), Some(t)) if t == class_uid * 100 + a => {}
            (a, t) => errors.push(format!(
                "type_uid {t:?} is not class_uid {class_uid} * 100 + activity_id {a:?}"
            )),
        }
        if event["metadata"]["version"].as_str() != Some(&self.version) {
            errors.push(format!(
                "metadata.version {} is not {}",
                event["metadata"]["version"], self.version
            ));
        }
        let profiles: BTreeSet<String> = event["metadata"]["profiles"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        self.check_object(&class, event, "", &profiles, &mut errors);
        errors
    }

    fn check_object(
        &self,
        def: &Resolved,
        v: &Value,
        path: &str,
        profiles: &BTreeSet<String>,
        errors: &mut Vec<String>,
    ) {
        let Some(obj) = v.as_object() else {
            errors.push(format!("{path}: not an object ({})", def.name));
            return;
        };
        let at = |k: &str| {
            if path.is_empty() {
                k.to_string()
            } else {
                format!("{path}.{k}")
            }
        };
        for (k, val) in obj {
            let Some(attr) = def.attrs.get(k) else {
                errors.push(format!("{}: not an attribute of {}", at(k), def.name));
                continue;
            };
            if let Some(p) = &attr.profile
                && !profiles.contains(p)
            {
                errors.push(format!(
                    "{}: comes with profile {p}, not declared in metadata.profiles",
                    at(k)
                ));
            }
            self.check_value(k, attr, val, &at(k), obj, profiles, errors);
        }
        for (k, attr) in &def.attrs {
            // A profile's attributes are the class's only when the event applies the profile.
            let applies = attr.profile.as_ref().is_none_or(|p| profiles.contains(p));
            if applies && attr.requirement.as_deref() == Some("required") && !obj.contains_key(k) {
                errors.push(format!("{}: required by {} but missing", at(k), def.name));
            }
        }
        if !def.at_least_one.is_empty() && !def.at_least_one.iter().any(|k| obj.contains_key(k)) {
            errors.push(format!(
                "{path}: {} needs at least one of {:?}",
                def.name, def.at_least_one
            ));
        }
        if !def.just_one.is_empty()
            && def.just_one.iter().filter(|k| obj.contains_key(*k)).count() != 1
        {
            errors.push(format!(
                "{path}: {} needs exactly one of {:?}",
                def.name, def.just_one
            ));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_value(
        &self,
        name: &str,
        attr: &Attr,
        v: &Value,
        path: &str,
        parent: &Map<String, Value>,
        profiles: &BTreeSet<String>,
        errors: &mut Vec<String>,
    ) {
        let Some(dict) = self.dictionary.get(name) else {
            errors.push(format!("{path}: {name} is not in the dictionary"));
            return;
        };
        let ty = dict["type"].as_str().unwrap();
        let values: Vec<&Value> = if dict["is_array"].as_bool() == Some(true) {
            match v.as_array() {
                Some(a) => a.iter().collect(),
                None => {
                    errors.push(format!("{path}: must be an array"));
                    return;
                }
            }
        } else {
            vec![v]
        };
        // Enum values: the dictionary's, merged with the class's or object's own.
        let mut keys = attr.enum_keys.clone();
        let mut captions = attr.enum_captions.clone();
        if let Some(e) = dict.get("enum").and_then(Value::as_object) {
            for (k, c) in e {
                keys.insert(k.clone());
                if let Some(c) = c["caption"].as_str() {
                    captions.entry(k.clone()).or_insert_with(|| c.to_string());
                }
            }
        }
        for (i, item) in values.iter().enumerate() {
            let p = if values.len() > 1 || dict["is_array"].as_bool() == Some(true) {
                format!("{path}[{i}]")
            } else {
                path.to_string()
            };
            if ty.ends_with("_t") {
                self.check_type(ty, item, &p, errors);
            } else if ty == "object" {
                // Free-form (`unmapped`): any object.
                if !item.is_object() {
                    errors.push(format!("{p}: must be an object"));
                }
            } else {
                match self.resolve_object(ty) {
                    Ok(def) => self.check_object(&def, item, &p, profiles, errors),
                    Err(e) => errors.push(format!("{p}: {e}")),
                }
            }
            if !keys.is_empty() {
                let key = match item {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if !keys.contains(&key) {
                    errors.push(format!("{p}: {key} is not one of {keys:?}"));
                } else if let Some(sibling) = dict["sibling"].as_str()
                    && key != "99"
                    && let Some(s) = parent.get(sibling)
                    && Some(s.as_str().unwrap_or_default())
                        != captions.get(&key).map(|c| c.as_str())
                {
                    errors.push(format!(
                        "{sibling}: {s} is not the caption {:?} of {name} {key}",
                        captions.get(&key)
                    ));
                }
            }
        }
    }

    fn check_type(&self, ty: &str, v: &Value, path: &str, errors: &mut Vec<String>) {
        let def = &self.types[ty];
        if let Some(base) = def.get("type").and_then(Value::as_str) {
            self.check_type(base, v, path, errors);
        }
        let ok = match ty {
            "string_t" => v.is_string(),
            "integer_t" => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            "long_t" => v.as_i64().is_some(),
            "float_t" => v.is_number(),
            "boolean_t" => v.is_boolean(),
            "json_t" => true,
            _ => true,
        };
        if !ok {
            errors.push(format!("{path}: {v} is not a {ty}"));
            return;
        }
        if let (Some(re), Some(s)) = (def.get("regex").and_then(Value::as_str), v.as_str()) {
            let mut patterns = self.patterns.lock().unwrap();
            let re = patterns
                .entry(re.to_string())
                .or_insert_with(|| regex::Regex::new(re).unwrap());
            if !re.is_match(s) {
                errors.push(format!("{path}: {s:?} does not match the pattern of {ty}"));
            }
        }
        if let (Some(max), Some(s)) = (def.get("max_len").and_then(Value::as_u64), v.as_str())
            && s.len() as u64 > max
        {
            errors.push(format!("{path}: longer than {max} ({ty})"));
        }
        if let (Some(r), Some(n)) = (def.get("range").and_then(Value::as_array), v.as_i64())
            && (n < r[0].as_i64().unwrap() || n > r[1].as_i64().unwrap())
        {
            errors.push(format!("{path}: {n} out of range {r:?} ({ty})"));
        }
    }
}

fn merge_attr(a: &mut Attr, v: &Value) {
    if let Some(r) = v.get("requirement").and_then(Value::as_str) {
        a.requirement = Some(r.into());
    }
    if let Some(e) = v.get("enum").and_then(Value::as_object) {
        for (k, c) in e {
            a.enum_keys.insert(k.clone());
            if let Some(c) = c["caption"].as_str() {
                a.enum_captions.insert(k.clone(), c.into());
            }
        }
    }
}

/// The pinned ECS field table.
pub struct Ecs {
    pub version: String,
    fields: Map<String, Value>,
}

impl Ecs {
    pub fn load() -> Ecs {
        let d = read_json(&schemas_dir().join("ecs/ecs_flat.json"));
        Ecs {
            version: d["version"].as_str().unwrap().into(),
            fields: d["fields"].as_object().unwrap().clone(),
        }
    }

    /// Every way `doc` breaks the field table; empty when it is valid.
    pub fn validate(&self, doc: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.walk("", doc, &mut errors);
        if doc["ecs"]["version"].as_str() != Some(&self.version) {
            errors.push(format!(
                "ecs.version {} is not {}",
                doc["ecs"]["version"], self.version
            ));
        }
        let allowed = |field: &str| -> BTreeMap<String, Vec<String>> {
            self.fields[field]["allowed_values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    let expected = v["expected_event_types"]
                        .as_array()
                        .map(|a| a.iter().map(|t| t.as_str().unwrap().into()).collect())
                        .unwrap_or_default();
                    (v["name"].as_str().unwrap().into(), expected)
                })
                .collect()
        };
        let strings = |v: &Value| -> Vec<String> {
            match v {
                Value::Array(a) => a.iter().map(|s| s.as_str().unwrap_or("").into()).collect(),
                Value::String(s) => vec![s.clone()],
                _ => vec![],
            }
        };
        for field in ["kind", "outcome", "category", "type"] {
            let ok = allowed(&format!("event.{field}"));
            for s in strings(&doc["event"][field]) {
                if !ok.contains_key(&s) {
                    errors.push(format!("event.{field}: {s:?} is not an allowed value"));
                }
            }
        }
        let categories = allowed("event.category");
        for c in strings(&doc["event"]["category"]) {
            for t in strings(&doc["event"]["type"]) {
                if let Some(expected) = categories.get(&c)
                    && !expected.contains(&t)
                {
                    errors.push(format!(
                        "event.type {t:?} is not expected with event.category {c:?} ({expected:?})"
                    ));
                }
            }
        }
        errors
    }

    fn walk(&self, prefix: &str, v: &Value, errors: &mut Vec<String>) {
        let Some(obj) = v.as_object() else {
            errors.push(format!("{prefix}: not an object"));
            return;
        };
        for (k, val) in obj {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match self.fields.get(&path) {
                Some(f) => self.check(&path, f, val, errors),
                None if val.is_object() => self.walk(&path, val, errors),
                None => errors.push(format!("{path}: not a field of ECS {}", self.version)),
            }
        }
    }

    fn check(&self, path: &str, f: &Value, v: &Value, errors: &mut Vec<String>) {
        let ty = f["type"].as_str().unwrap();
        let is_array = f["normalize"]
            .as_array()
            .is_some_and(|n| n.iter().any(|x| x == "array"));
        let items: Vec<&Value> = match v {
            Value::Array(a) if is_array => a.iter().collect(),
            Value::Array(_) => {
                errors.push(format!("{path}: an array, but the field is not one"));
                return;
            }
            v => vec![v],
        };
        for item in items {
            let ok = match ty {
                "keyword" | "constant_keyword" | "wildcard" | "text" | "match_only_text" => {
                    item.is_string()
                }
                "date" => item
                    .as_str()
                    .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
                "long" => item.as_i64().is_some(),
                "ip" => item
                    .as_str()
                    .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok()),
                "object" => match (item.as_object(), f["object_type"].as_str()) {
                    (Some(m), Some("keyword")) => m.values().all(Value::is_string),
                    (Some(_), _) => true,
                    (None, _) => false,
                },
                other => {
                    errors.push(format!(
                        "{path}: type {other} not checked by this validator"
                    ));
                    true
                }
            };
            if !ok {
                errors.push(format!("{path}: {item} is not of type {ty}"));
            }
        }
    }
}
