//! Layering (defaults < TOML file < environment), extraction that reports every problem at once,
//! and tracing each problem back to the file line or environment variable that caused it.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::check::Checker;
use crate::error::{Component, ConfigError, Invalid, Origin, Problem, display_key};

/// Where environment variables come from: the process, or an explicit list (tests, embedding).
/// Both go through the same code path.
#[derive(Clone, Default)]
pub enum EnvSource {
    /// `std::env::vars_os()` at load time (non-UTF-8 is replaced lossily).
    #[default]
    Process,
    /// These `(name, value)` pairs and nothing else.
    Vars(Vec<(String, String)>),
}

impl EnvSource {
    /// The process environment.
    pub fn process() -> Self {
        EnvSource::Process
    }

    /// An explicit environment, e.g. `EnvSource::vars([("CODESTAX_AGENT__BATCH__MAX_RECORDS", "5")])`.
    pub fn vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        EnvSource::Vars(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// No environment at all.
    pub fn empty() -> Self {
        EnvSource::Vars(Vec::new())
    }

    fn collect(&self) -> Vec<(String, String)> {
        match self {
            EnvSource::Process => std::env::vars_os()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
                .collect(),
            EnvSource::Vars(vars) => vars.clone(),
        }
    }
}

// Values may be secrets (tokens): show names only.
impl fmt::Debug for EnvSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvSource::Process => f.write_str("EnvSource::Process"),
            EnvSource::Vars(vars) => f
                .debug_tuple("EnvSource::Vars")
                .field(&vars.iter().map(|(k, _)| k).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// A configuration type the loader can fill in.
pub(crate) trait Settings: Default + Serialize + DeserializeOwned {
    const COMPONENT: Component;
    /// Keys whose environment values are taken verbatim as strings instead of being parsed
    /// (a token `0123` must not become the number 123).
    const VERBATIM_ENV_KEYS: &'static [&'static str] = &[];
    /// Adds every range or consistency problem to `c`.
    fn check(&self, c: &mut Checker);
    /// Derives values after extraction (before `check`).
    fn normalize(&mut self) {}
}

/// Checks a configuration built in code; problems carry `Origin::Unknown`.
pub(crate) fn validate<T: Settings>(config: &T) -> Result<(), ConfigError> {
    let mut c = Checker::default();
    config.check(&mut c);
    let problems: Vec<Problem> = c
        .into_problems()
        .into_iter()
        .map(|inv| Problem {
            key: display_key(T::COMPONENT, &inv.path),
            message: inv.message,
            origin: Origin::Unknown,
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            component: T::COMPONENT,
            problems,
        })
    }
}

/// One source of values: the TOML file, or a single environment variable. Keeping each
/// variable separate lets figment's metadata name the exact variable behind a bad value, and
/// lets the loader drop a bad key and extract again to find the next problem.
struct Layer {
    metadata: Metadata,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

const ENV_SOURCE_TAG: &str = "env:";

/// The file's path and text, kept for line lookups.
struct FileText {
    path: PathBuf,
    text: String,
}

/// Loads `T`: defaults, then `file` if given (it must exist), then the environment variables
/// with the component's prefix; then checks ranges. Reports every problem found.
pub(crate) fn load<T: Settings>(file: Option<&Path>, env: &EnvSource) -> Result<T, ConfigError> {
    let component = T::COMPONENT;
    let mut layers = Vec::new();
    let mut file_text = None;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            component,
            path: path.to_path_buf(),
            source,
        })?;
        let dict = parse_toml(component, path, &text)?;
        layers.push(Layer {
            metadata: Metadata::from("TOML file", Source::File(path.to_path_buf())),
            dict,
        });
        file_text = Some(FileText {
            path: path.to_path_buf(),
            text,
        });
    }
    layers.extend(env_layers(
        component.env_prefix(),
        T::VERBATIM_ENV_KEYS,
        env.collect(),
    ));

    let mut problems = Vec::new();
    // Paths that failed to deserialize: range checks on them would only repeat the problem.
    let mut bad_paths: Vec<Vec<String>> = Vec::new();
    // Each round drops the keys that failed, so the next round finds the next problem.
    for _round in 0..256 {
        let figment = layers.iter().fold(
            Figment::from(Serialized::defaults(T::default())),
            |figment, layer| figment.merge(layer),
        );
        match figment.extract::<T>() {
            Ok(mut config) => {
                config.normalize();
                let mut c = Checker::default();
                config.check(&mut c);
                for inv in c.into_problems() {
                    if bad_paths.iter().any(|bad| overlaps(bad, &inv.path)) {
                        continue;
                    }
                    problems.push(resolve(component, inv, &figment, file_text.as_ref()));
                }
                return if problems.is_empty() {
                    Ok(config)
                } else {
                    Err(ConfigError::Invalid {
                        component,
                        problems,
                    })
                };
            }
            Err(errors) => {
                let mut progressed = false;
                for error in errors {
                    let problem = from_figment(component, &error, &figment, file_text.as_ref());
                    if !problems.contains(&problem) {
                        problems.push(problem);
                    }
                    let removal = removal_path(&error.path);
                    if !removal.is_empty() {
                        for layer in &mut layers {
                            progressed |= remove(&mut layer.dict, removal);
                        }
                    }
                    bad_paths.push(error.path);
                }
                if !progressed {
                    break;
                }
            }
        }
    }
    Err(ConfigError::Invalid {
        component,
        problems,
    })
}

fn parse_toml(component: Component, path: &Path, text: &str) -> Result<Dict, ConfigError> {
    Toml::from_str::<Dict>(text).map_err(|err| {
        let (line, column) = match err.span() {
            Some(span) => {
                let (line, column) = line_col(text, span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        ConfigError::Syntax {
            component,
            path: path.to_path_buf(),
            line,
            column,
            message: err.message().trim().replace('\n', "; "),
        }
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// One layer per variable with `prefix` (case-insensitive, as figment's `Env`): the rest of the
/// name is lowercased and split on `__`, and the value parsed like figment's `Env` does
/// (`5` is a number, `true` a bool, `[1, 2]` an array, anything else a string), except for
/// `verbatim` keys, which stay strings.
fn env_layers(prefix: &str, verbatim: &[&str], vars: Vec<(String, String)>) -> Vec<Layer> {
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| {
            let name = name.trim();
            name.len() > prefix.len()
                && name.is_char_boundary(prefix.len())
                && name[..prefix.len()].eq_ignore_ascii_case(prefix)
        })
        .collect();
    vars.sort();
    vars.into_iter()
        .filter_map(|(name, value)| {
            let name = name.trim().to_string();
            let key = name[prefix.len()..].replace("__", ".").to_ascii_lowercase();
            let key = key.trim();
            if key.split('.').any(str::is_empty) {
                return None;
            }
            let parsed: Value = if verbatim.contains(&key) {
                Value::from(value)
            } else {
                value.parse().unwrap_or_else(|never| match never {})
            };
            let dict = figment::util::nest(key, parsed).into_dict()?;
            Some(Layer {
                metadata: Metadata::named(format!("environment variable {name}"))
                    .source(Source::Custom(format!("{ENV_SOURCE_TAG}{name}"))),
                dict,
            })
        })
        .collect()
}

/// Whether one path is a prefix of the other (segment-wise).
fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// What to drop after a failure at `path`: the key itself, or the whole list when the failure
/// is an element (dropping one element would renumber the rest).
fn removal_path(path: &[String]) -> &[String] {
    let mut end = path.len();
    while end > 0 && is_index(&path[end - 1]) {
        end -= 1;
    }
    &path[..end]
}

fn is_index(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit())
}

/// Removes the value at `path` (dict keys and list indices) from `dict`; whether it was there.
fn remove(dict: &mut Dict, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let Some((first, rest)) = parents.split_first() else {
        return dict.remove(last).is_some();
    };
    let mut value = match dict.get_mut(first) {
        Some(value) => value,
        None => return false,
    };
    for segment in rest {
        value = match value {
            Value::Dict(_, d) => match d.get_mut(segment) {
                Some(v) => v,
                None => return false,
            },
            Value::Array(_, items) => {
                match segment.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    Some(v) => v,
                    None => return false,
                }
            }
            _ => return false,
        };
    }
    match value {
        Value::Dict(_, d) => d.remove(last).is_some(),
        _ => false,
    }
}

/// The value at `path` in the merged figment, or the deepest ancestor that exists.
fn find_deepest(figment: &Figment, path: &[String]) -> Option<Value> {
    let mut value = figment.find_value("").ok()?;
    for segment in path {
        let next = match &value {
            Value::Dict(_, d) => d.get(segment).cloned(),
            Value::Array(_, items) => segment
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i).cloned()),
            _ => None,
        };
        match next {
            Some(next) => value = next,
            None => break,
        }
    }
    Some(value)
}

fn origin_of(metadata: Option<&Metadata>, path: &[String], file: Option<&FileText>) -> Origin {
    let Some(metadata) = metadata else {
        return Origin::Unknown;
    };
    match &metadata.source {
        Some(Source::File(path_in_md)) => Origin::File {
            path: path_in_md.clone(),
            line: file
                .filter(|f| &f.path == path_in_md)
                .and_then(|f| find_line(&f.text, path)),
        },
        Some(Source::Custom(custom)) if custom.starts_with(ENV_SOURCE_TAG) => Origin::Env {
            var: custom[ENV_SOURCE_TAG.len()..].to_string(),
        },
        _ => Origin::Default,
    }
}

/// Attaches the origin of the value at the problem's key.
fn resolve(
    component: Component,
    inv: Invalid,
    figment: &Figment,
    file: Option<&FileText>,
) -> Problem {
    let origin_at = |path: &[String]| {
        let metadata = find_deepest(figment, path).and_then(|v| figment.get_metadata(v.tag()));
        origin_of(metadata, path, file)
    };
    let mut origin = origin_at(&inv.path);
    if origin == Origin::Default
        && let Some(other) = &inv.against
    {
        origin = origin_at(other);
    }
    Problem {
        key: display_key(component, &inv.path),
        origin,
        message: inv.message,
    }
}

/// Turns one figment extraction error into a problem with our wording.
fn from_figment(
    component: Component,
    error: &figment::Error,
    figment: &Figment,
    file: Option<&FileText>,
) -> Problem {
    use figment::error::Kind;
    let message = match &error.kind {
        Kind::UnknownField(field, expected) => unknown_key(field, expected),
        Kind::UnknownVariant(found, expected) => format!(
            "unknown value {found:?}, expected one of: {}",
            expected.join(", ")
        ),
        Kind::InvalidValue(actual, expected) => {
            format!("invalid value: found {actual}, expected {expected}")
        }
        Kind::Message(message) => {
            let mut message = message.clone();
            if message == "invalid socket address syntax" {
                message.push_str(" (expected IP:PORT, e.g. 127.0.0.1:8470)");
            }
            if let Some(found) = find_deepest(figment, &error.path)
                .filter(|_| !error.path.is_empty())
                .and_then(|v| scalar(&v))
            {
                message.push_str(&format!(", got {found}"));
            }
            message
        }
        other => other.to_string(),
    };
    let metadata = error
        .metadata
        .as_ref()
        .or_else(|| find_deepest(figment, &error.path).and_then(|v| figment.get_metadata(v.tag())));
    Problem {
        key: display_key(component, &error.path),
        message,
        origin: origin_of(metadata, &error.path, file),
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(_, s) => Some(format!("{s:?}")),
        Value::Num(_, n) => n
            .to_u128()
            .map(|n| n.to_string())
            .or_else(|| n.to_i128().map(|n| n.to_string())),
        Value::Bool(_, b) => Some(b.to_string()),
        _ => None,
    }
}

fn unknown_key(field: &str, expected: &[&str]) -> String {
    let mut message = "unknown key".to_string();
    if let Some((_, candidate)) = expected
        .iter()
        .map(|candidate| (strsim::jaro_winkler(field, candidate), candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
    {
        message.push_str(&format!(" (did you mean {candidate:?}?)"));
    }
    if !expected.is_empty() {
        message.push_str(", expected one of: ");
        message.push_str(&expected.join(", "));
    }
    message
}

/// Best-effort line of `path` in TOML `text`: the `key =` line or `[table]` header that sets
/// it, or else the deepest line that sets an enclosing table or inline value. Understands
/// `[table]`, `[[array.of.tables]]` (counting occurrences for list indices) and dotted keys.
pub(crate) fn find_line(text: &str, path: &[String]) -> Option<usize> {
    let mut table: Vec<String> = Vec::new();
    let mut occurrences: HashMap<Vec<String>, usize> = HashMap::new();
    let mut best: Option<(usize, usize)> = None; // (matched segments, line)
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let full = if let Some(rest) = line.strip_prefix("[[") {
            let name = split_key(rest.split("]]").next().unwrap_or(""));
            let n = occurrences.entry(name.clone()).or_default();
            table = name;
            table.push(n.to_string());
            *n += 1;
            table.clone()
        } else if let Some(rest) = line.strip_prefix('[') {
            table = split_key(rest.split(']').next().unwrap_or(""));
            table.clone()
        } else if let Some(eq) = key_end(line) {
            let mut full = table.clone();
            full.extend(split_key(&line[..eq]));
            full
        } else {
            continue;
        };
        if full.as_slice() == path {
            return Some(index + 1);
        }
        if !full.is_empty()
            && path.starts_with(&full)
            && best.is_none_or(|(len, _)| full.len() > len)
        {
            best = Some((full.len(), index + 1));
        }
    }
    best.map(|(_, line)| line)
}

/// Byte offset of the `=` ending a `key =` line, ignoring `=` inside quoted keys; none for
/// comments and continuation lines.
fn key_end(line: &str) -> Option<usize> {
    let first = line.chars().next()?;
    if !(first.is_ascii_alphanumeric() || matches!(first, '_' | '-' | '"' | '\'')) {
        return None;
    }
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '=') => return Some(i),
            _ => {}
        }
    }
    None
}

fn split_key(key: &str) -> Vec<String> {
    key.split('.')
        .map(|part| {
            part.trim()
                .trim_matches(|c| c == '"' || c == '\'')
                .to_string()
        })
        .filter(|part| !part.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        s.split('.').map(String::from).collect()
    }

    const TOML: &str = r#"# comment
data_dir = "x"

[http]
listen = "127.0.0.1:1"   # trailing

[[orgs]]
id = "a"

[[orgs]]
id = "b"
retention_days = 5
limits = { x = 1 }

[sources]
files.include = ["a"]
"#;

    #[test]
    fn finds_lines_of_keys_tables_and_list_elements() {
        assert_eq!(find_line(TOML, &p("data_dir")), Some(2));
        assert_eq!(find_line(TOML, &p("http")), Some(4));
        assert_eq!(find_line(TOML, &p("http.listen")), Some(5));
        assert_eq!(find_line(TOML, &p("orgs.0.id")), Some(8));
        assert_eq!(find_line(TOML, &p("orgs.1.retention_days")), Some(12));
        assert_eq!(find_line(TOML, &p("orgs.1.plan")), Some(10));
        assert_eq!(find_line(TOML, &p("orgs.1.limits.x")), Some(13));
        assert_eq!(find_line(TOML, &p("sources.files.include.0")), Some(16));
        assert_eq!(find_line(TOML, &p("nope")), None);
    }

    #[test]
    fn env_names_map_to_nested_keys() {
        let layers = env_layers(
            "CODESTAX_AGENT__",
            &["collector.token"],
            vec![
                ("CODESTAX_AGENT__COLLECTOR__TOKEN".into(), "0123".into()),
                ("CODESTAX_AGENT__BATCH__MAX_RECORDS".into(), "5".into()),
                ("codestax_agent__log__level".into(), "debug".into()),
                ("CODESTAX_AGENT__A____B".into(), "x".into()),
                ("CODESTAX_AGENT__".into(), "x".into()),
                ("OTHER".into(), "x".into()),
            ],
        );
        assert_eq!(layers.len(), 3);
        let batch = layers[0].dict.get("batch").unwrap().as_dict().unwrap();
        assert_eq!(batch.get("max_records").unwrap().to_u128(), Some(5));
        assert_eq!(
            layers[0].metadata.source,
            Some(Source::Custom(
                "env:CODESTAX_AGENT__BATCH__MAX_RECORDS".into()
            ))
        );
        let collector = layers[1].dict.get("collector").unwrap().as_dict().unwrap();
        assert_eq!(collector.get("token").unwrap().as_str(), Some("0123"));
        let log = layers[2].dict.get("log").unwrap().as_dict().unwrap();
        assert_eq!(log.get("level").unwrap().as_str(), Some("debug"));
    }

    #[test]
    fn removal_drops_whole_lists_for_element_failures() {
        assert_eq!(removal_path(&p("orgs.1.plan")), &p("orgs.1.plan")[..]);
        assert_eq!(removal_path(&p("sources.files.0")), &p("sources.files")[..]);
        let mut dict: Dict = Toml::from_str(TOML).unwrap();
        assert!(remove(&mut dict, &p("orgs.1.retention_days")));
        assert!(!remove(&mut dict, &p("orgs.1.retention_days")));
        assert!(remove(&mut dict, &p("http.listen")));
        assert!(remove(&mut dict, &p("data_dir")));
        assert!(!remove(&mut dict, &p("orgs.7.id")));
    }
}
