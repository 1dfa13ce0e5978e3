//! `--check-config` of the real binaries: the shipped examples pass, a misspelt key fails naming
//! the key and the file.

use codestax_tests::bin;
use std::process::Command;

fn example(name: &str) -> String {
    format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shipped_examples_are_valid() {
    for (binary, file) in [
        ("codestax-collector", "collector.toml"),
        ("codestax-agent", "agent.toml"),
    ] {
        let out = Command::new(bin(binary))
            .arg("--check-config")
            .arg(example(file))
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{binary}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(summary.contains("configuration is valid"), "{summary}");
        assert!(!summary.contains("csk_"), "no secrets in the summary");
    }
}

#[test]
fn a_misspelt_key_exits_2_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(example("collector.toml")).unwrap();
    assert!(text.contains("default_days"));
    let bad = dir.path().join("collector.toml");
    std::fs::write(&bad, text.replacen("default_days", "default_dayz", 1)).unwrap();
    let out = Command::new(bin("codestax-collector"))
        .arg("--check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("collector.retention.default_dayz: unknown key"),
        "{err}"
    );
    assert!(
        err.contains(&bad.display().to_string()),
        "names the file: {err}"
    );
    assert!(err.contains("did you mean \"default_days\""), "{err}");

    let out = Command::new(bin("codestax-collector"))
        .arg("--check-config")
        .arg(example("collector.toml"))
        .env("CODESTAX_COLLECTOR__RETENTION__DEFAULT_DAYS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("collector.retention.default_days: must be between 1 and 3650, got 0 (in environment variable CODESTAX_COLLECTOR__RETENTION__DEFAULT_DAYS)"),
        "{err}"
    );

    let out = Command::new(bin("codestax-agent"))
        .arg("--check-config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}
