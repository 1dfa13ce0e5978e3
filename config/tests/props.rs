//! Property tests of configuration loading: any TOML value for any known key, from the file or
//! the environment, and any file text, give a configuration or an error naming the key and
//! where the value came from (the file, or the variable); never a panic.
//! Longer run: `PROPTEST_CASES=5000 cargo test --release -p codestax-config --test props`.

use codestax_config::{AgentConfig, CollectorConfig, ConfigError, EnvSource, Origin};
use proptest::prelude::*;
use serde::Serialize;
use std::path::Path;
use toml::Value;

fn cases(n: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = n;
    }
    config
}

/// Every key path of a configuration's default (tables descended, the rest leaves).
fn key_paths(config: &impl Serialize) -> Vec<Vec<String>> {
    fn walk(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if let Value::Table(t) = v {
            for (k, child) in t {
                prefix.push(k.clone());
                out.push(prefix.clone());
                walk(child, prefix, out);
                prefix.pop();
            }
        }
    }
    let mut out = vec![
        // Lists whose default is empty, so not in the default's keys.
        vec!["orgs".to_string()],
    ];
    walk(&Value::try_from(config).unwrap(), &mut Vec::new(), &mut out);
    out
}

/// TOML values of every type, including out-of-range numbers and odd strings.
fn toml_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        prop::sample::select(vec![
            "",
            " ",
            "0",
            "-1",
            "1s",
            "10ms",
            "1h",
            "99999999999d",
            "0.0.0.0:0",
            "127.0.0.1:99999",
            "[::1]:4317",
            "localhost",
            "info",
            "json",
            "text",
            "gzip",
            "zstd",
            "none",
            "day",
            "week",
            "month",
            "/",
            "/nonexistent/dir",
            "../x",
            "acme",
            "a b",
            "\u{0}",
            "😀",
            "http://127.0.0.1:1",
            "https://x",
            "free",
            "team",
            "enterprise",
        ])
        .prop_map(|s| Value::String(s.to_string())),
        "\\PC{0,12}".prop_map(Value::String),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            Just(i64::MAX),
            Just(i64::MIN),
            any::<i64>(),
            0i64..100_000
        ]
        .prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Float),
        any::<bool>().prop_map(Value::Boolean),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_string()),
                    Just("retention_days".to_string()),
                    Just("plan".to_string()),
                    "[a-z_]{1,8}"
                ],
                inner,
                0..3,
            )
            .prop_map(|m| Value::Table(m.into_iter().collect())),
        ]
    })
}

fn set(table: &mut toml::Table, path: &[String], value: Value) {
    let (last, parents) = path.split_last().unwrap();
    let mut at = table;
    for p in parents {
        let entry = at
            .entry(p.clone())
            .or_insert_with(|| Value::Table(Default::default()));
        if !entry.is_table() {
            *entry = Value::Table(Default::default());
        }
        at = entry.as_table_mut().unwrap();
    }
    at.insert(last.clone(), value);
}

/// The checks shared by both components: an error lists problems, each naming a key of this
/// component, and those from the file or the environment name it.
fn check(result: Result<(), ConfigError>, component: &str, file: &Path, what: &str) {
    let Err(e) = result else { return };
    let text = e.to_string();
    assert!(!text.is_empty(), "{what}");
    match &e {
        ConfigError::Syntax { path, .. } | ConfigError::Read { path, .. } => {
            assert_eq!(path, file, "{what}: {e}");
            assert!(text.contains(&file.display().to_string()), "{what}: {e}");
        }
        ConfigError::Invalid { problems, .. } => {
            assert!(!problems.is_empty(), "{what}");
            for p in problems {
                assert!(
                    p.key.starts_with(component) && p.key.len() > component.len(),
                    "{what}: {p} names no key"
                );
                match &p.origin {
                    Origin::File { path, .. } => assert_eq!(path, file, "{what}: {p}"),
                    Origin::Env { var } => {
                        assert!(var.starts_with("CODESTAX_"), "{what}: {p}")
                    }
                    Origin::Default | Origin::Unknown => {}
                }
            }
            // A bad value that came from outside is blamed on where it came from.
            assert!(
                problems
                    .iter()
                    .any(|p| !matches!(p.origin, Origin::Default | Origin::Unknown)),
                "{what}: {e}"
            );
        }
    }
}

fn env_var(component: &str, path: &[String]) -> String {
    format!(
        "CODESTAX_{}__{}",
        component.to_ascii_uppercase(),
        path.join("__").to_ascii_uppercase()
    )
}

fn env_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn load(component: &str, file: &Path, env: &EnvSource) -> Result<(), ConfigError> {
    if component == "collector" {
        CollectorConfig::load(Some(file), env).map(|_| ())
    } else {
        AgentConfig::load(Some(file), env).map(|_| ())
    }
}

proptest! {
    #![proptest_config(cases(128))]

    /// One to three known keys (or a made-up one) set to any TOML value, in the file or in
    /// the environment.
    #[test]
    fn prop_any_value_for_any_key(
        collector in any::<bool>(),
        picks in prop::collection::vec((any::<prop::sample::Index>(), toml_value()), 1..4),
        unknown in proptest::option::of(("[a-z_]{1,8}", toml_value())),
        from_env in any::<bool>(),
    ) {
        let (component, paths) = if collector {
            ("collector", key_paths(&CollectorConfig::default()))
        } else {
            ("agent", key_paths(&AgentConfig::default()))
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("{component}.toml"));
        let mut table = toml::Table::new();
        let mut vars = Vec::new();
        for (i, value) in picks {
            let path = &paths[i.index(paths.len())];
            if from_env {
                vars.push((env_var(component, path), env_text(&value)));
            } else {
                set(&mut table, path, value);
            }
        }
        if let Some((key, value)) = unknown {
            set(&mut table, &[key], value);
        }
        let text = toml::to_string(&table).unwrap();
        std::fs::write(&file, &text).unwrap();
        let what = format!("{text}\n{vars:?}");
        check(load(component, &file, &EnvSource::vars(vars)), component, &file, &what);
    }

    /// Any text as the file (valid TOML with one byte changed, cut, or anything).
    #[test]
    fn prop_any_file_text(
        collector in any::<bool>(),
        text in prop_oneof![
            "\\PC{0,200}",
            prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ],
        example in (any::<prop::sample::Index>(), any::<u8>(), any::<bool>()),
    ) {
        let component = if collector { "collector" } else { "agent" };
        let base = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/{component}.toml")),
        )
        .unwrap();
        let (at, byte, cut) = example;
        let mut mutated = base.into_bytes();
        let i = at.index(mutated.len());
        if cut {
            mutated.truncate(i);
        } else {
            mutated[i] = byte;
        }
        let dir = tempfile::tempdir().unwrap();
        for text in [text, String::from_utf8_lossy(&mutated).into_owned()] {
            let file = dir.path().join(format!("{component}.toml"));
            std::fs::write(&file, &text).unwrap();
            check(load(component, &file, &EnvSource::empty()), component, &file, &text);
        }
    }
}

/// Found by `prop_any_file_text` (examples/agent.toml cut after `max_bytes = 2684354`): a pair
/// check blamed `spool.segment_bytes` on its "built-in default", not naming the file or the
/// line that set `spool.max_bytes`. It now points at where the other key of the pair was set.
#[test]
fn a_pair_check_names_the_file_line_of_the_key_that_was_set() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, "[spool]\nmax_bytes = 2684354\n").unwrap();
    let e = AgentConfig::load(Some(&file), &EnvSource::empty()).unwrap_err();
    let p = &e.problems()[0];
    assert_eq!(p.key, "agent.spool.segment_bytes");
    assert_eq!(
        p.origin,
        Origin::File {
            path: file.clone(),
            line: Some(2)
        },
        "{e}"
    );
    // Set from the environment: the variable is named.
    let env = EnvSource::vars([("CODESTAX_AGENT__SPOOL__MAX_BYTES", "2684354")]);
    let e = AgentConfig::load(None, &env).unwrap_err();
    assert_eq!(
        e.problems()[0].origin,
        Origin::Env {
            var: "CODESTAX_AGENT__SPOOL__MAX_BYTES".into()
        },
        "{e}"
    );
}
