//! The first hour of a new user (issue 19), over a real collector and the real CLIs: a key made
//! with `codestax-collector keys create` works the moment the command returns; the CLI's export
//! filters by outcome, says what it wrote, ends quietly when its reader stops; its help shows no
//! empty environment values; the collector's log file carries plain text; a word finds the
//! actions it names; a viewer's consecutive views read as one row; CSV names who wrote a key
//! event.

use codestax_tests::{Collector, CollectorOptions, bin, cli, now_rfc3339, record, run_cli};
use serde_json::{Value, json};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

fn start(dir: &std::path::Path) -> Collector {
    let mut options = CollectorOptions::for_tests(&dir.join("collector"), "");
    options.stderr = Some(dir.join("collector.log"));
    // Info lines too, so that the log file has fields to look at.
    options.before_spawn = Some(|cmd| {
        cmd.env("RUST_LOG", "info");
    });
    let mut c = Collector::configure(options).unwrap();
    c.launch().unwrap();
    c
}

#[test]
fn a_key_made_with_the_cli_works_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path());
    // Several in a row, each used the moment `keys create` returns, as the README's block is
    // pasted: no wait, no retry.
    for i in 0..5 {
        let ingest = c.new_key("acme", "INGEST").unwrap();
        let (status, body) = c.ingest(
            &ingest,
            &[record(
                "acme",
                &format!("at-once-{i}"),
                "scan.triggered",
                "ada@acme.example",
                &now_rfc3339(),
            )],
        );
        assert_eq!(status, 200, "ingest with a brand-new key: {body}");
        let admin = c.new_key("acme", "ORG_ADMIN").unwrap();
        let r = c.get("/api/v1/orgs/acme/audit-log?category=scan", &admin);
        assert_eq!(r.status(), 200, "search with a brand-new key");
    }
}

#[test]
fn cli_export_search_help_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path());
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let mut records = Vec::new();
    for i in 0..30 {
        let mut r = record(
            "acme",
            &format!("r{i}"),
            if i % 3 == 0 {
                "finding.triaged"
            } else {
                "scan.failed"
            },
            "ada@acme.example",
            &now_rfc3339(),
        );
        if i % 2 == 0 {
            r["outcome"] = json!("failure");
        }
        records.push(r);
    }
    assert_eq!(c.ingest(&ingest, &records).0, 200);
    c.wait_for_total("acme", "user=ada@acme.example", &admin, 30);
    let url = c.url("");
    let server = ["--url", url.as_str(), "--token", admin.as_str()];

    // --outcome, and the summary of what was written.
    let mut args = vec![
        "export",
        "--format",
        "ndjson",
        "--output",
        "failures.ndjson",
        "--outcome",
        "failure",
        "--user",
        "ada@acme.example",
    ];
    args.extend(server);
    let out = run_cli(dir.path(), &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let text = std::fs::read_to_string(dir.path().join("failures.ndjson")).unwrap();
    let exported: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v.get("action").is_some())
        .collect();
    assert_eq!(exported.len(), 15);
    assert!(exported.iter().all(|r| r["outcome"] == "failure"));
    assert!(
        stderr.contains("exported 15 records (")
            && stderr.contains(&format!(", {} bytes) to failures.ndjson", text.len())),
        "the summary names records, bytes and file: {stderr}"
    );

    // A CSV export's summary names its proof too.
    let mut args = vec!["export", "--output", "all.csv"];
    args.extend(server);
    let out = run_cli(dir.path(), &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("to all.csv, its proof to all.csv.proof.json"),
        "{stderr}"
    );

    // `--output - | head -1`: the reader stops early; the CLI ends quietly.
    let mut args = vec!["export", "--format", "ndjson", "--output", "-"];
    args.extend(server);
    {
        // Enough bytes that the pipe fills before the export ends.
        let more: Vec<Value> = (0..500)
            .map(|i| {
                let mut r = record(
                    "acme",
                    &format!("bulk-{}-{i}", rand::random::<u64>()),
                    "auth.login",
                    "bob@acme.example",
                    &now_rfc3339(),
                );
                r["message"] = json!("x".repeat(200));
                r
            })
            .collect();
        assert_eq!(c.ingest(&ingest, &more).0, 200);
    }
    c.wait_for_total("acme", "user=bob@acme.example", &admin, 500);
    let mut child = cli(dir.path(), &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        status.success(),
        "a closed pipe ends the export quietly: {status} {stderr}"
    );
    assert!(!stderr.to_lowercase().contains("broken pipe"), "{stderr}");

    // Help shows which environment variables count, never an empty or secret value.
    let help = Command::new(bin("codestax"))
        .args(["export", "--help"])
        .env("CODESTAX_TOKEN", "csk_secret")
        .env_remove("CODESTAX_URL")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[env: CODESTAX_URL]"), "{help}");
    assert!(
        !help.contains("=]") && !help.contains("csk_secret"),
        "{help}"
    );

    // The collector's log went to a file: plain text, optional fields absent rather than None.
    let log = c.stderr();
    assert!(!log.is_empty(), "the collector logged to its file");
    assert!(
        !log.contains('\u{1b}'),
        "no ANSI codes in a log file: {log}"
    );
    assert!(!log.contains("Some("), "{log}");
}

#[test]
fn words_views_and_who_in_csv() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path());
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let mut triaged = record(
        "acme",
        "t1",
        "finding.triaged",
        "ada@acme.example",
        &now_rfc3339(),
    );
    triaged["message"] = json!("moved to confirmed");
    let scan = record(
        "acme",
        "s1",
        "scan.triggered",
        "ada@acme.example",
        &now_rfc3339(),
    );
    assert_eq!(c.ingest(&ingest, &[triaged, scan]).0, 200);
    c.wait_for_total("acme", "user=ada@acme.example", &admin, 2);

    // `q=triage` finds finding.triaged (and not the scan); `q=trigger` the scan.
    let ids = |q: &str| -> Vec<String> {
        let v = c.get_json(
            &format!("/api/v1/orgs/acme/audit-log?user=ada@acme.example&q={q}"),
            &admin,
        );
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("triage"), ["t1"]);
    assert_eq!(ids("trigger"), ["s1"]);

    // Every search records its own view; group_views=true reads a viewer's run as one row.
    let viewer = c.create_key("acme", "ORG_ADMIN");
    for category in ["scan", "finding", "auth"] {
        c.get_json(
            &format!("/api/v1/orgs/acme/audit-log?category={category}"),
            &viewer,
        );
    }
    // The viewer's own: the admin's searches above are views too.
    let viewer_id = c.get_json("/api/v1/whoami", &viewer)["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let viewers = format!("action=audit_log.viewed&user={viewer_id}");
    let views = |n: u64| {
        codestax_tests::wait_for(Duration::from_secs(10), || {
            c.total("acme", &viewers, &admin) >= n
        })
    };
    assert!(views(3), "each read keeps its entry");
    let page = c.get_json(
        "/api/v1/orgs/acme/audit-log?action=audit_log.viewed&group_views=true",
        &admin,
    );
    let entries = page["entries"].as_array().unwrap();
    let rows = page["rows"].as_array().unwrap();
    let run = rows
        .iter()
        .find(|r| r["views"]["count"] == 3)
        .unwrap_or_else(|| panic!("a row of the viewer's three views: {page}"));
    let filters: Vec<&Value> = run["views"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &entries[i.as_u64().unwrap() as usize]["metadata"]["filters"]["category"])
        .collect();
    assert_eq!(
        filters,
        [&json!(["auth"]), &json!(["finding"]), &json!(["scan"])],
        "newest first, each with its filters"
    );
    let plain = c.get_json(
        "/api/v1/orgs/acme/audit-log?action=audit_log.viewed",
        &admin,
    );
    assert!(plain.get("rows").is_none(), "rows only when asked");
    let bad = c.get("/api/v1/orgs/acme/audit-log?group_views=yes", &admin);
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.json::<Value>().unwrap()["error"]["field"],
        "group_views"
    );

    // CSV: the key events the CLI made name the collector as who did them.
    assert!(
        codestax_tests::wait_for(Duration::from_secs(10), || {
            c.total("acme", "action=auth.api_key_created", &admin) >= 3
        }),
        "the key events are recorded"
    );
    let out = run_cli(
        dir.path(),
        &[
            "export",
            "--output",
            "keys.csv",
            "--action",
            "auth.api_key_created",
            "--url",
            &c.url(""),
            "--token",
            &admin,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut reader = csv::Reader::from_path(dir.path().join("keys.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert!(rows.len() >= 3, "{rows:?}");
    for row in rows {
        assert_eq!(
            (&row[1], &row[12]),
            ("collector", "collector"),
            "who: {row:?}"
        );
    }
}
