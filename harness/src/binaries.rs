//! Where the workspace's binaries are, built before the first use.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the workspace's binaries once per test process, so the tests never run stale ones
/// (`cargo test -p codestax-tests` alone does not rebuild other packages' binaries).
fn ensure_built() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--workspace", "--bins"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --workspace --bins failed");
    });
}

/// Path of a workspace binary, built for these tests: beside the running test executable's
/// directory (`target/<profile>/deps/<test>` → `target/<profile>/<name>`).
pub fn bin(name: &str) -> PathBuf {
    ensure_built();
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo test --workspace` (or `cargo build --workspace`) first",
        path.display()
    );
    path
}

/// The `codestax` CLI run in `cwd` with `args`, without the caller's `CODESTAX_URL`,
/// `CODESTAX_TOKEN`, `CODESTAX_CONFIG` and `CODESTAX_PUBLIC_KEY` (a developer's own settings
/// must not reach a test), stdin closed.
pub fn cli(cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("codestax"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("CODESTAX_URL")
        .env_remove("CODESTAX_TOKEN")
        .env_remove("CODESTAX_CONFIG")
        .env_remove("CODESTAX_PUBLIC_KEY")
        .stdin(std::process::Stdio::null());
    cmd
}

/// [`cli`], run to its end.
pub fn run_cli(cwd: &Path, args: &[&str]) -> std::process::Output {
    cli(cwd, args).output().expect("run codestax")
}
