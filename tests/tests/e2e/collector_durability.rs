//! kill -9 of the collector during a stream of ingest: after a restart every acknowledged record
//! is searchable exactly once — records of the current week, and records spread over past weeks
//! (staged, and flushed by flights of several lanes, when the kill comes).

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use codestax_tests::{Collector, record};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[test]
fn kill_9_during_ingest_loses_no_acknowledged_record() {
    kill_9_during_ingest("", |_| Duration::minutes(5));
}

/// Nine records in ten over the last 120 days, the tenth in the last minutes: the past ones are
/// staged, and a short `cold_flush_after` makes flights leave every few hundred milliseconds, so
/// the kill finds records staged, in flight and committed above `indexed_through`.
#[test]
fn kill_9_during_spread_ingest_loses_no_acknowledged_record() {
    kill_9_during_ingest(
        "cold_flush_after = \"300ms\"\ncold_flush_threads = 2\n[retention]\ndefault_days = 365\n",
        |n| {
            if n % 10 == 0 {
                Duration::minutes(5)
            } else {
                Duration::minutes((n.wrapping_mul(7919) % (120 * 24 * 60)) as i64)
            }
        },
    );
}

/// Four clients send batches of 200 records of acme, record `n` (counted per client) at `age(n)`
/// before now, until the collector (started with `index_toml` in its `[index]` table) is killed
/// with SIGKILL after 2.5 s; after a restart every acknowledged record is found exactly once.
fn kill_9_during_ingest(index_toml: &str, age: fn(u64) -> Duration) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Collector::start(&dir.path().join("data"), index_toml);
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let url = c.url("/api/v1/ingest");
    let now = Utc::now();
    let mut senders = Vec::new();
    for t in 0..4u64 {
        let (acked, sent, stop, url, ingest) = (
            acked.clone(),
            sent.clone(),
            stop.clone(),
            url.clone(),
            ingest.clone(),
        );
        senders.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let time = |n: u64| {
                let at: DateTime<Utc> = now - age(n + t * 1_000_003);
                at.to_rfc3339_opts(SecondsFormat::Micros, true)
            };
            let mut batch_no = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<String> = (0..200).map(|i| format!("t{t}-b{batch_no}-{i}")).collect();
                let body: String = ids
                    .iter()
                    .zip(batch_no * 200..)
                    .map(|(id, n)| {
                        format!(
                            "{}\n",
                            record("acme", id, "scan.completed", "ada@acme.example", &time(n))
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
