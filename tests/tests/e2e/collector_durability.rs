//! kill -9 of the collector during a stream of ingest: after a restart every acknowledged record
//! is searchable exactly once.

use chrono::{Duration, SecondsFormat, Utc};
use codestax_tests::{Collector, record};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[test]
fn kill_9_during_ingest_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Collector::start(&dir.path().join("data"), "");
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let url = c.url("/api/v1/ingest");
    let mut senders = Vec::new();
    for t in 0..4 {
        let (acked, sent, stop, url, ingest) = (
            acked.clone(),
            sent.clone(),
            stop.clone(),
            url.clone(),
            ingest.clone(),
        );
        senders.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let time =
                (Utc::now() - Duration::minutes(5)).to_rfc3339_opts(SecondsFormat::Micros, true);
            let mut batch_no = 0;
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<String> = (0..200).map(|i| format!("t{t}-b{batch_no}-{i}")).collect();
                let body: String = ids
                    .iter()
                    .map(|id| {
                        format!(
                            "{}\n",
                            record("acme", id, "scan.completed", "ada@acme.example", &time)
                        )
                    })
                    .collect();
                sent.lock().unwrap().push(ids.clone());
                let answered = client
                    .post(&url)
                    .bearer_auth(&ingest)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send();
                if let Ok(r) = answered
                    && r.status().is_success()
                {
                    acked.lock().unwrap().extend(ids);
                }
                batch_no += 1;
            }
        }));
    }
    std::thread::sleep(std::time::Duration::from_millis(2500));
    c.kill9();
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 1000,
        "a real stream was acknowledged before the kill: {}",
        acked.len()
    );

    c.restart(); // ready means the WAL is replayed into the index
    let entries = c.search_all("acme", "action=scan.completed", &admin);
    let found: Vec<String> = entries
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let unique: BTreeSet<String> = found.iter().cloned().collect();
    assert_eq!(unique.len(), found.len(), "nothing is stored twice");
    let missing: Vec<_> = acked.difference(&unique).take(5).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but lost: {missing:?} (of {})",
        acked.len()
    );
    let all_sent: BTreeSet<String> = sent.lock().unwrap().iter().flatten().cloned().collect();
    assert!(unique.is_subset(&all_sent), "only records that were sent");
}
