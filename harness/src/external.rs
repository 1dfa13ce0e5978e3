//! Third-party servers the cluster tests run (nats-server, PostgreSQL, moto): where their
//! binaries are, and what a test does when one is missing — `SKIPPED` on a developer's machine,
//! a failure in CI (`CI` set), which has no skip path.

use std::path::{Path, PathBuf};

/// The workspace root (the harness is one of its members).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The Python venv `.ci/run` makes: `CODESTAX_VENV`, else `<workspace>/.venv`.
pub fn venv() -> PathBuf {
    std::env::var_os("CODESTAX_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv"))
}

/// An executable named `name` in a directory of `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A server binary: the file named by the variable `var` (which must exist when set), else
/// `name` in the venv's `bin/`, else on `PATH`. The venv comes before `PATH` because it holds the
/// versions the tests need (Debian's nats-server 2.9 lacks `sync_interval: always`).
pub fn find_binary(var: &str, name: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{var}={} is not a file", path.display()))
        };
    }
    let in_venv = venv().join("bin").join(name);
    if in_venv.is_file() {
        return Ok(in_venv);
    }
    on_path(name).ok_or_else(|| {
        format!(
            "{name} not found: set {var}, or put it in {}/bin (`.ci/run` makes that venv), or on PATH",
            venv().display()
        )
    })
}

/// Whether this is CI (`CI` set and not empty), where a missing server fails the test.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// What a test does when a server cannot be had: panics in CI; elsewhere prints `SKIPPED` (to
/// stderr, which `cargo test` shows for a passing test only with `--nocapture`, and to stdout)
/// and returns `None` so the test returns early.
pub fn skip_or_fail<T>(test: &str, result: Result<T, String>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(why) if in_ci() => panic!("{test}: FAILED, CI has no skip path: {why}"),
        Err(why) => {
            let line = format!("SKIPPED {test}: {why} (set CI=1 to make this a failure)");
            println!("{line}");
            eprintln!("{line}");
            None
        }
    }
}
