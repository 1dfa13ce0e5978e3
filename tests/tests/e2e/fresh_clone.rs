//! The fresh-clone test (issue 19) as part of `cargo test --workspace`: `tests/fresh-clone.sh`
//! follows the README's commands as written in a copy of the repository, on the binaries these
//! tests run (it checks the commands, not the compile). It needs bash, git, tar and curl, as a
//! reader of the README does; without them it says SKIPPED (a failure under CI=1).

use codestax_tests::{bin, on_path, skip_or_fail};
use std::path::Path;
use std::process::Command;

#[test]
fn the_readme_commands_work_as_written() {
    let tools = ["bash", "git", "tar", "curl"]
        .into_iter()
        .map(|t| on_path(t).ok_or(format!("{t} is not on PATH")))
        .collect::<Result<Vec<_>, String>>();
    if skip_or_fail("fresh_clone", tools).is_none() {
        return;
    }
    let bins = bin("codestax");
    let bins = bins.parent().unwrap();
    bin("codestax-collector");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fresh-clone.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("FRESH_CLONE_BINS", bins)
        .output()
        .expect("run tests/fresh-clone.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tests/fresh-clone.sh failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("fresh-clone: ok"), "{stdout}");
}
