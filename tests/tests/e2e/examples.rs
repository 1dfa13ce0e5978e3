//! The shipped examples work: the OpenTelemetry example app's events reach the collector (gRPC
//! and HTTP), and the sample emit file is valid input.

use codestax_tests::{Collector, bin};
use std::process::Command;

#[test]
fn example_app_events_reach_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"), "");
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    for (run, args) in [
        ("grpc", vec!["--endpoint".to_string(), c.grpc_endpoint()]),
        (
            "http",
            vec![
                "--http".to_string(),
                "--endpoint".to_string(),
                c.url("/v1/logs"),
            ],
        ),
    ] {
        let out = Command::new(bin("otel-audit-app"))
            .args(&args)
            .args(["--token", &ingest, "--org", "acme", "--run", run])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{run}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    c.wait_for_total(
        "acme",
        "user=ada%40acme.example&q=-category%3Aauth_log",
        &admin,
        10,
    );
    let triaged = c.get_json("/api/v1/orgs/acme/audit-log/grpc-3", &admin);
    assert_eq!(triaged["action"], "finding.triaged");
    assert_eq!(triaged["metadata"]["changes"][0]["new"], "false_positive");
    assert_eq!(triaged["repository"], "acme/payments");
    assert_eq!(triaged["org_id"], "acme");
}

#[test]
fn sample_emit_file_is_valid_input() {
    let dir = tempfile::tempdir().unwrap();
    // The sample's times are fixed; a long retention keeps them readable whenever this runs.
    let c = Collector::start(
        &dir.path().join("data"),
        "[retention]\ndefault_days = 3650\n",
    );
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/emit/app.jsonl"
    ))
    .unwrap();
    let lines = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64;
    let r = c.post("/api/v1/ingest", &ingest, "application/x-ndjson", body);
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = r.json().unwrap();
    assert_eq!(answer["accepted"].as_u64(), Some(lines), "{answer}");
    assert_eq!(answer["rejected"], 0);
    c.wait_for_total("acme", "since=2026-11-20&until=2026-11-21", &admin, lines);
}
