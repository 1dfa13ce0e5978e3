//! Starting with many keys already in the key file: the collector records one event per key at
//! start, more than the store's queue to the indexer holds (16 batches), and must still serve.

use chrono::{SecondsFormat, Utc};
use codestax_tests::{Collector, bin, record};
use std::process::Command;

#[test]
fn starts_and_ingests_with_more_key_events_than_the_index_queue_holds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first_ingest = None;
    for org in 0..12 {
        for role in ["INGEST", "ORG_ADMIN"] {
            let out = Command::new(bin("codestax-collector"))
                .args([
                    "keys",
                    "create",
                    "--org",
                    &format!("org-{org}"),
                    "--role",
                    role,
                ])
                .arg("--data-dir")
                .arg(&data)
                .output()
                .expect("run keys create");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            if first_ingest.is_none() && role == "INGEST" {
                first_ingest = Some(String::from_utf8(out.stdout).unwrap().trim().to_string());
            }
        }
    }
    let c = Collector::start(&data, "");
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    // Before the indexer ran ahead of the key events, this request never got an answer.
    let (status, body) = c.ingest(
        first_ingest.as_deref().unwrap(),
        &[record(
            "org-0",
            "r1",
            "auth.login",
            "ada@acme.example",
            &now,
        )],
    );
    assert_eq!(status, 200, "{body}");
    let admin = c.create_key("org-0", "ORG_ADMIN");
    c.wait_for_total("org-0", "action=auth.login", &admin, 1);
    // Every key event was recorded: org-11's two keys from before the start and one made now.
    let admin11 = c.create_key("org-11", "ORG_ADMIN");
    c.wait_for_total("org-11", "action=auth.api_key_created", &admin11, 3);
}
