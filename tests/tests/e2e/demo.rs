//! The README's main command: `codestax demo` starts a collector and an agent, generates
//! activity across every category, prints the dashboard URL and a key, stops on Ctrl-C, and a
//! second run continues with the same data.

use codestax_tests::bin;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A base port with the five after it free, claimed by the harness (no other test's child
/// gets them).
fn free_port_base() -> u16 {
    codestax_tests::try_free_ports(6).expect("six free consecutive ports")
}

/// Starts the demo and reads its banner; returns the process, the dashboard URL and the key.
fn start_demo(data: &std::path::Path, base: u16) -> (Child, String, String) {
    let mut child = Command::new(bin("codestax"))
        .args(["demo", "--port-base", &base.to_string(), "--data-dir"])
        .arg(data)
        .arg("--examples")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/emit"))
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (mut url, mut key) = (None, None);
    while url.is_none() || key.is_none() {
        let line = lines.next().expect("the demo printed its banner").unwrap();
        if let Some(rest) = line.trim().strip_prefix("Dashboard:") {
            url = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.trim().strip_prefix("API key:") {
            key = rest.split_whitespace().next().map(str::to_string);
        }
    }
    // Keep draining stdout so the demo never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, url.unwrap(), key.unwrap())
}

fn stop(mut child: Child) {
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the demo exits 0 on Ctrl-C: {status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not stop within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn facets(base: u16, key: &str) -> Value {
    reqwest::blocking::Client::new()
        .get(format!(
            "http://127.0.0.1:{base}/api/v1/orgs/acme/audit-log/facets?top=50"
        ))
        .bearer_auth(key)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
fn demo_runs_shows_every_category_and_continues_on_a_second_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("codestax-data");
    let base = free_port_base();
    let (child, url, key) = start_demo(&data, base);
    assert_eq!(url, format!("http://127.0.0.1:{base}/settings/audit-log"));
    assert!(key.starts_with("csk_"), "{key}");

    // acme's history travels file → agent → collector; wait for all of it.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut f = facets(base, &key);
    while f["total"].as_u64().unwrap_or(0) < 3000 {
        assert!(Instant::now() < deadline, "history not delivered: {f}");
        std::thread::sleep(Duration::from_millis(250));
        f = facets(base, &key);
    }
    let categories: Vec<&str> = f["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["value"].as_str().unwrap())
        .collect();
    for c in [
        "auth",
        "repository",
        "scan",
        "finding",
        "team",
        "settings",
        "integration",
    ] {
        assert!(categories.contains(&c), "{c} in {categories:?}");
    }
    let first_total = f["total"].as_u64().unwrap();

    // A second demo while this one runs, with another data dir or the same: it names the port
    // in use once and the way out, and starts nothing.
    for other in [dir.path().join("other"), data.clone()] {
        let out = Command::new(bin("codestax"))
            .args(["demo", "--port-base", &base.to_string(), "--data-dir"])
            .arg(&other)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("port {base} (collector HTTP API)")),
            "{stderr}"
        );
        assert!(stderr.contains("--port-base"), "{stderr}");
        assert_eq!(
            stderr.matches("in use").count(),
            1,
            "the cause once: {stderr}"
        );
    }
    stop(child);

    let (child, _, key_again) = start_demo(&data, base);
    assert_eq!(
        key_again, key,
        "the second run reuses the demo's key and data"
    );
    let f = facets(base, &key);
    let total = f["total"].as_u64().unwrap();
    assert!(
        total >= first_total && total < first_total + 100,
        "continues, nothing doubled: {first_total} then {total}"
    );
    stop(child);
}
