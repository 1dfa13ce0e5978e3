//! The benchmark binary on a tiny corpus (about 2k records per run), so it cannot rot: every
//! subcommand's path runs end to end against the real collector, and against PostgreSQL when its
//! server binaries are installed (the bench skips that part loudly otherwise).

use codestax_tests::bin;
use std::process::Command;

#[test]
fn bench_all_on_a_tiny_corpus() {
    let out = Command::new(bin("codestax-bench"))
        .arg("--collector")
        .arg(bin("codestax-collector"))
        .args([
            "all",
            "--records",
            "2000",
            "--ingest-orgs",
            "2",
            "--freshness-records",
            "2000",
            "--freshness-rate",
            "4000",
            "--search-records",
            "3000",
            "--orgs",
            "3",
            "--largest",
            "1000",
            "--queries",
            "5",
            "--days",
            "10",
        ])
        .output()
        .expect("run codestax-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "codestax-bench failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for heading in [
        "### Ingest with durable acks",
        "### Freshness",
        "### Search corpus",
        "### Search latency",
        "### Deep cursor walk",
    ] {
        assert!(stdout.contains(heading), "no {heading:?} in:\n{stdout}");
    }
    // The walk returns every record of the largest org: its 1000 and its two key-creation records
    // (plus any audit_log.viewed records the queries wrote).
    let walk = stdout
        .lines()
        .find(|l| l.split('|').nth(1).map(str::trim) == Some("collector"))
        .expect("walk row");
    let records: u64 = walk
        .split('|')
        .nth(2)
        .unwrap()
        .trim()
        .replace(',', "")
        .parse()
        .unwrap();
    assert!(records >= 1002, "{walk}");
}
