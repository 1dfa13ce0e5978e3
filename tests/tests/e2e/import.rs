//! `codestax import` over real collectors and the real CLI: an export of one collector imported
//! into another gives the same records (ids, times, contents), stamped `imported` by the key,
//! chained by the target; the source's collector entries under reserved ids are refused; a
//! JSON export imports the same (all duplicates the second time); an import killed with -9
//! goes on from its checkpoint and stores each record once; refused and expired records are
//! listed with their lines; stdin imports without a checkpoint; the provenance names the
//! source (`--source`, by default the input file's name).

use chrono::{Duration, SecondsFormat, Utc};
use codestax_tests::{Collector, cli, record, run_cli};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

fn ago(minutes: i64) -> String {
    (Utc::now() - Duration::minutes(minutes)).to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `n` records of `org`, a day old and one `step` of minutes apart.
fn records(org: &str, prefix: &str, n: usize) -> Vec<Value> {
    spaced(org, prefix, n, 1)
}

fn spaced(org: &str, prefix: &str, n: usize, step: i64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut r = record(
                org,
                &format!("{prefix}-{i}"),
                if i % 2 == 0 {
                    "auth.login"
                } else {
                    "scan.triggered"
                },
                "ada@acme.example",
                &ago(60 * 24 + i as i64 * step),
            );
            r["metadata"]["ticket"] = json!(format!("SEC-{i}"));
            if i % 3 == 0 {
                r["outcome"] = json!("failure");
            }
            r
        })
        .collect()
}

fn ok(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{what}: {err}");
    err
}

/// The NDJSON export of `org`, its records by id (the proof line left out).
fn exported(c: &Collector, org: &str, token: &str) -> BTreeMap<String, Value> {
    let r = c.get(
        &format!("/api/v1/orgs/{org}/audit-log/export?format=ndjson"),
        token,
    );
    assert_eq!(r.status(), 200);
    r.text()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("{\"codestax_proof\""))
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["id"].as_str().unwrap().to_string(), v))
        .collect()
}

/// What "the same record" means: everything but what the storing collector assigns.
fn content(v: &Value) -> Value {
    let mut v = v.clone();
    for k in ["seq", "prev_hash", "hash", "received_at", "provenance"] {
        v.as_object_mut().unwrap().remove(k);
    }
    v
}

#[test]
fn round_trip_between_two_collectors_keeps_ids_times_and_contents() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let a = Collector::start(&work.join("a"), "");
    let b = Collector::start(&work.join("b"), "");
    let a_ingest = a.create_key("acme", "INGEST");
    let a_admin = a.create_key("acme", "ORG_ADMIN");
    let n = 2500;
    for chunk in records("acme", "rt", n).chunks(1000) {
        assert_eq!(a.ingest(&a_ingest, chunk).0, 200);
    }
    a.wait_for_total("acme", "action=auth.login", &a_admin, (n / 2) as u64);
    let a_url = a.url("");
    let out = run_cli(
        work,
        &[
            "export", "--format", "ndjson", "--output", "a.ndjson", "--url", &a_url, "--token",
            &a_admin,
        ],
    );
    ok(&out, "export");
    let text = std::fs::read_to_string(work.join("a.ndjson")).unwrap();
    let reserved = text
        .lines()
        .filter(|l| l.contains("\"id\":\"codestax:"))
        .count();
    let source_records = text
        .lines()
        .filter(|l| !l.starts_with("{\"codestax_proof\""))
        .count();

    let b_ingest = b.create_key("acme", "INGEST");
    let b_admin = b.create_key("acme", "ORG_ADMIN");
    let b_url = b.url("");
    let out = run_cli(
        work,
        &[
            "import", "--input", "a.ndjson", "--format", "ndjson", "--url", &b_url, "--token",
            &b_ingest,
        ],
    );
    let summary = ok(&out, "import");
    assert!(
        summary.contains(&format!(
            "imported {} records (0 were already stored), {reserved} rejected, 0 expired on arrival",
            source_records - reserved
        )),
        "{summary}"
    );
    assert!(
        !work.join("a.ndjson.import-checkpoint").exists(),
        "a complete import leaves no checkpoint"
    );
    if reserved > 0 {
        let rejects = std::fs::read_to_string(work.join("a.ndjson.rejects.ndjson")).unwrap();
        assert_eq!(rejects.lines().count(), reserved, "{rejects}");
        let first: Value = serde_json::from_str(rejects.lines().next().unwrap()).unwrap();
        assert!(first["line"].as_u64().unwrap() >= 1);
        assert_eq!(first["errors"][0]["field"], "id", "{first}");
    }

    b.wait_for_total("acme", "action=auth.login", &b_admin, (n / 2) as u64);
    let source = exported(&a, "acme", &a_admin);
    let target = exported(&b, "acme", &b_admin);
    let key_id = b.get_json("/api/v1/whoami", &b_ingest)["key_id"].clone();
    let mut compared = 0;
    for (id, s) in source.iter().filter(|(id, _)| id.starts_with("rt-")) {
        let t = target
            .get(id)
            .unwrap_or_else(|| panic!("{id} not imported"));
        assert_eq!(content(t), content(s), "{id}");
        assert_eq!(t["provenance"]["writer"], "imported", "{t}");
        // The source is named: by default the input file's name.
        assert_eq!(t["provenance"]["source"], "a.ndjson", "{t}");
        if !key_id.is_null() {
            assert_eq!(t["provenance"]["key_id"], key_id, "{t}");
        }
        compared += 1;
    }
    assert_eq!(compared, n);
    // The target chains them itself, and its chain verifies.
    let verify = b.get_json("/api/v1/orgs/acme/audit-log/verify", &b_admin);
    assert_eq!(verify["ok"], true, "{verify}");

    // The JSON export of the same log: every record already there.
    let out = run_cli(
        work,
        &[
            "export", "--format", "json", "--output", "a.json", "--url", &a_url, "--token",
            &a_admin,
        ],
    );
    ok(&out, "export json");
    let out = run_cli(
        work,
        &[
            "import", "--input", "a.json", "--format", "json", "--url", &b_url, "--token",
            &b_ingest,
        ],
    );
    let summary = ok(&out, "import json");
    // The app's records are all there already; the source's own entries (reserved ids,
    // the exports among them) are refused again.
    assert!(
        summary.contains(&format!("imported 0 records ({n} were already stored)")),
        "{summary}"
    );
    let again = exported(&b, "acme", &b_admin);
    assert_eq!(
        again.keys().filter(|k| k.starts_with("rt-")).count(),
        n,
        "stored once"
    );
}

#[test]
fn killed_import_goes_on_from_its_checkpoint_and_stores_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let c = Collector::start(&work.join("c"), "");
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let n = 30_000;
    let mut text = String::new();
    // Within one weekly partition: this test is about the import, not out-of-order indexing.
    for r in spaced("acme", "k", n, 0) {
        text += &r.to_string();
        text.push('\n');
    }
    std::fs::write(work.join("big.ndjson"), &text).unwrap();
    let url = c.url("");
    let args = [
        "import",
        "--input",
        "big.ndjson",
        "--url",
        &url,
        "--token",
        &ingest,
    ];
    let mut child = cli(work, &args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let checkpoint = work.join("big.ndjson.import-checkpoint");
    let started = std::time::Instant::now();
    while !checkpoint.exists() && started.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(checkpoint.exists(), "no checkpoint within 60 s");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let saved: Value = serde_json::from_slice(&std::fs::read(&checkpoint).unwrap()).unwrap();
    let done_before = saved["counts"]["imported"].as_u64().unwrap();
    assert!(done_before > 0 && done_before < n as u64, "{saved}");
    // Batches were in flight when it was killed; the checkpoint never passes one the collector
    // had not acknowledged: every record before its line is stored (line L holds `k-{L-1}`).
    let past = saved["line"].as_u64().unwrap() as usize - 1;
    assert!(past >= done_before as usize, "{saved}");
    let mut missing = Vec::new();
    let all_there = codestax_tests::wait_for(std::time::Duration::from_secs(30), || {
        let stored = exported(&c, "acme", &admin);
        missing = (0..past)
            .map(|i| format!("k-{i}"))
            .filter(|id| !stored.contains_key(id))
            .take(5)
            .collect();
        missing.is_empty()
    });
    assert!(
        all_there,
        "the checkpoint ({saved}) passed records not stored: {missing:?}"
    );

    let out = run_cli(work, &args);
    let summary = ok(&out, "rerun");
    assert!(
        summary.contains("this run continued from line"),
        "{summary}"
    );
    assert!(!checkpoint.exists());
    c.wait_for_total_within(
        "acme",
        "action=auth.login",
        &admin,
        (n / 2) as u64,
        std::time::Duration::from_secs(60),
    );
    let stored = exported(&c, "acme", &admin);
    assert_eq!(stored.keys().filter(|k| k.starts_with("k-")).count(), n);
    // Counted exactly: each record imported once (a batch lost with the kill comes back as
    // duplicates), none rejected.
    let counted = |word: &str| -> u64 {
        let at = summary.find(word).unwrap();
        summary[..at]
            .split(|ch: char| !ch.is_ascii_digit())
            .rfind(|s| !s.is_empty())
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        counted(" records (") + counted(" were already stored"),
        n as u64,
        "{summary}"
    );
    assert_eq!(counted(" rejected"), 0, "{summary}");
}

#[test]
fn rejects_expired_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let c = Collector::start(&work.join("c"), "[retention]\ndefault_days = 3\n");
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let good = |id: &str, minutes: i64| {
        record("acme", id, "auth.login", "ada@acme.example", &ago(minutes)).to_string()
    };
    let lines = [
        good("s-1", 5),
        "{not json".to_string(),
        good("codestax:read-00000000000000000000000000000000", 5),
        good("s-old", 60 * 24 * 10),
        String::new(),
        record(
            "acme",
            "s-2",
            "audit_log.viewed",
            "ada@acme.example",
            &ago(5),
        )
        .to_string(),
        good("s-3", 5),
    ];
    let input = lines.join("\n") + "\n";
    let url = c.url("");
    let mut child = cli(
        work,
        &[
            "import",
            "--input",
            "-",
            "--rejects",
            "r.ndjson",
            "--source",
            "old collector/acme",
            "--url",
            &url,
            "--token",
            &ingest,
        ],
    )
    .stdin(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let summary = ok(&out, "stdin import");
    assert!(summary.contains("not resumable"), "{summary}");
    assert!(
        summary.contains(
            "imported 3 records (0 were already stored), 2 rejected, 1 expired on arrival"
        ),
        "{summary}"
    );
    assert!(
        summary
            .contains("expired on arrival (older than the org's retention, not stored): lines 4"),
        "{summary}"
    );
    let rejects: Vec<Value> = std::fs::read_to_string(work.join("r.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at: Vec<u64> = rejects
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(at, [2, 3, 4], "{rejects:?}");
    assert_eq!(rejects[1]["errors"][0]["field"], "id");
    assert_eq!(rejects[2]["errors"][0]["field"], "time");
    assert!(
        rejects[2]["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("expired on arrival"),
        "{rejects:?}"
    );
    assert!(!Path::new(&work.join("-.import-checkpoint")).exists());
    // The source's collector entry comes in as an imported record; nothing expired is stored.
    c.wait_for_total("acme", "action=auth.login", &admin, 2);
    let stored = exported(&c, "acme", &admin);
    assert_eq!(stored["s-2"]["provenance"]["writer"], "imported");
    assert_eq!(
        stored["s-2"]["provenance"]["source"], "old collector/acme",
        "the source --source names"
    );
    assert!(!stored.contains_key("s-old"));
    // A source the route cannot keep is refused, naming the parameter.
    let body = format!("{}\n", good("s-4", 5)).into_bytes();
    for bad in [
        "source=",
        "source=a%0Ab",
        "source=old-%E2%80%AEgol",
        &format!("source={}", "x".repeat(201)),
    ] {
        let r = c.post(
            &format!("/api/v1/import?{bad}"),
            &ingest,
            "application/x-ndjson",
            body.clone(),
        );
        assert_eq!(r.status(), 400, "{bad}");
        let e: Value = r.json().unwrap();
        assert_eq!(e["error"]["field"], "source", "{e}");
    }
    let metrics = c.metrics();
    assert!(
        metrics.lines().any(|l| l.contains("records_rejected")
            && l.contains("reason=\"expired_on_arrival\"")
            && l.trim_end().ends_with(" 1")),
        "{metrics}"
    );
    // An app's ingest still may not write what the collector alone writes.
    let (status, _) = c.ingest(
        &ingest,
        &[record(
            "acme",
            "s-9",
            "audit_log.viewed",
            "ada@acme.example",
            &ago(1),
        )],
    );
    assert_eq!(status, 400);
}
