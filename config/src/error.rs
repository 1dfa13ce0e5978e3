//! What can be wrong with a configuration, said so the operator can fix it in one pass.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Which program a configuration belongs to. Prefixes every key in messages and names the
/// environment variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// `codestax-collector`.
    Collector,
    /// `codestax-agent`.
    Agent,
}

impl Component {
    /// The key prefix used in messages: `collector` or `agent`.
    pub fn name(self) -> &'static str {
        match self {
            Component::Collector => "collector",
            Component::Agent => "agent",
        }
    }

    /// The environment variable prefix: `CODESTAX_COLLECTOR__` or `CODESTAX_AGENT__`.
    pub fn env_prefix(self) -> &'static str {
        match self {
            Component::Collector => "CODESTAX_COLLECTOR__",
            Component::Agent => "CODESTAX_AGENT__",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// A TOML file; `line` is found by scanning the file text (best effort).
    File { path: PathBuf, line: Option<usize> },
    /// An environment variable, named as it was set.
    Env { var: String },
    /// Not known (e.g. a config built in code and checked with `validate()`).
    Unknown,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("built-in default"),
            Origin::File {
                path,
                line: Some(line),
            } => {
                write!(f, "in {}, line {line}", path.display())
            }
            Origin::File { path, line: None } => write!(f, "in {}", path.display()),
            Origin::Env { var } => write!(f, "in environment variable {var}"),
            Origin::Unknown => Ok(()),
        }
    }
}

/// One thing wrong with a configuration: the full key, what is wrong, and where the value came
/// from. Displays as `collector.retention.default_days: must be between 1 and 3650, got 0 (in
/// collector.toml, line 12)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Full key path with the component prefix, e.g. `collector.orgs[2].retention_days`.
    pub key: String,
    /// What is wrong, e.g. `must be between 1 and 3650, got 0`.
    pub message: String,
    /// Which source set the value.
    pub origin: Origin,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)?;
        match self.origin {
            Origin::Unknown => Ok(()),
            ref origin => write!(f, " ({origin})"),
        }
    }
}

/// Why a configuration could not be loaded. Displays as one line per problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file given with `--config` could not be read.
    #[error("{component} config file {}: {}", path.display(), read_reason(source))]
    Read {
        component: Component,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not valid TOML.
    #[error("{component} config file {}: invalid TOML{}: {message}", path.display(), at_line(*line, *column))]
    Syntax {
        component: Component,
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// The values are wrong: unknown keys, wrong types, out of range. Every problem is listed.
    #[error("{}", lines(problems))]
    Invalid {
        component: Component,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The individual problems (empty for `Read` and `Syntax`, whose message is the whole story).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

fn read_reason(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::NotFound => "not found".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => format!("cannot read: {err}"),
    }
}

fn at_line(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" at line {line}, column {column}"),
        (Some(line), None) => format!(" at line {line}"),
        _ => String::new(),
    }
}

fn lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A problem found by `check()` before its origin is known: a key path relative to the
/// component (`orgs.2.retention_days`, numeric segments are list indices) and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub(crate) path: Vec<String>,
    pub(crate) message: String,
    /// The other key of a pair that disagrees (`spool.max_bytes` for `spool.segment_bytes`):
    /// when `path` holds its default, the problem is reported where this one was set.
    pub(crate) against: Option<Vec<String>>,
}

/// Renders a relative key path for messages: `["orgs", "2", "id"]` becomes
/// `collector.orgs[2].id`.
pub(crate) fn display_key(component: Component, path: &[String]) -> String {
    let mut key = component.name().to_string();
    for segment in path {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            key.push('[');
            key.push_str(segment);
            key.push(']');
        } else {
            key.push('.');
            key.push_str(segment);
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_render_list_indices_in_brackets() {
        let path: Vec<String> = ["orgs", "2", "retention_days"].map(String::from).into();
        assert_eq!(
            display_key(Component::Collector, &path),
            "collector.orgs[2].retention_days"
        );
        assert_eq!(display_key(Component::Agent, &[]), "agent");
    }

    #[test]
    fn problems_print_one_per_line_with_origin() {
        let err = ConfigError::Invalid {
            component: Component::Collector,
            problems: vec![
                Problem {
                    key: "collector.a".into(),
                    message: "bad".into(),
                    origin: Origin::File {
                        path: "x.toml".into(),
                        line: Some(3),
                    },
                },
                Problem {
                    key: "collector.b".into(),
                    message: "worse".into(),
                    origin: Origin::Env {
                        var: "CODESTAX_COLLECTOR__B".into(),
                    },
                },
            ],
        };
        assert_eq!(
            err.to_string(),
            "collector.a: bad (in x.toml, line 3)\n\
             collector.b: worse (in environment variable CODESTAX_COLLECTOR__B)"
        );
    }
}
