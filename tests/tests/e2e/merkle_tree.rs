//! Each org's Merkle tree and its signed heads over the real collector: the tree survives kill -9
//! during ingest and equals the tree recomputed from an NDJSON export; the heads verify with the
//! public key the collector prints (and with no other key, and not once a byte is changed); a
//! tree directory lost is rebuilt from the index to the same root; retention deletes records
//! but what remains still proves against the same signed root.

use chrono::{Duration, SecondsFormat, Utc};
use codestax_common::AuditRecord;
use codestax_common::chain::leaf_of_sealed;
use codestax_common::merkle::{self, Hash, Leaves};
use codestax_common::note::{Checkpoint, NoteSigner, VerifierKey, open};
use codestax_tests::{Collector, bin, record};
use serde_json::Value;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

fn ago(d: Duration) -> String {
    (Utc::now() - d).to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The org's whole stored log from an NDJSON export, in `seq` order.
fn export(c: &Collector, org: &str, token: &str) -> Vec<AuditRecord> {
    let r = c.get(
        &format!("/api/v1/orgs/{org}/audit-log/export?format=ndjson"),
        token,
    );
    assert!(r.status().is_success(), "{}", r.status());
    let mut records: Vec<AuditRecord> = r
        .text()
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("{\"codestax_proof\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    records.sort_by_key(|r| r.seq);
    records
}

fn leaves(records: &[AuditRecord]) -> Vec<Hash> {
    records.iter().map(|r| leaf_of_sealed(r).unwrap()).collect()
}

/// The org's current signed head, opened with `key`.
fn checkpoint(c: &Collector, org: &str, token: &str, key: &VerifierKey) -> (Checkpoint, String) {
    let head = c.get_json(&format!("/api/v1/orgs/{org}/audit-log/checkpoint"), token);
    let note = head["checkpoint"].as_str().unwrap().to_string();
    let cp = Checkpoint::parse(open(&note, key).unwrap()).unwrap();
    assert_eq!(head["tree_size"], cp.size);
    (cp, note)
}

/// `codestax-collector signing-key` on the collector's config.
fn printed_key(c: &Collector) -> VerifierKey {
    let out = Command::new(bin("codestax-collector"))
        .arg("--config")
        .arg(&c.config_path)
        .arg("signing-key")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    VerifierKey::parse(String::from_utf8(out.stdout).unwrap().trim()).unwrap()
}

/// Waits until the export holds every record the signed head covers, and checks that the tree
/// recomputed from it has the head's root. Returns the head.
fn head_matches_export(c: &Collector, org: &str, token: &str, key: &VerifierKey) -> Checkpoint {
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (cp, _) = checkpoint(c, org, token, key);
        let records = export(c, org, token);
        let seqs: Vec<u64> = records.iter().map(|r| r.seq.unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "the export is the whole log"
        );
        if seqs.len() as u64 >= cp.size {
            let l = leaves(&records);
            assert_eq!(
                merkle::root(&mut Leaves(&l), cp.size).unwrap(),
                cp.root,
                "the tree recomputed from the export has the signed root"
            );
            return cp;
        }
        assert!(Instant::now() < deadline, "the export lags the head");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn the_tree_survives_kill_9_equals_the_export_and_is_rebuilt_from_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Collector::start(&dir.path().join("data"), "");
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let other = c.create_key("globex", "ORG_OWNER");

    // The key the binary prints is the key the API serves, and it needs no API key.
    let key = printed_key(&c);
    let served: Value = c
        .client()
        .get(c.url("/api/v1/signing-key"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(served["verifier_key"], key.to_string());

    // Ingest from four threads, then kill -9 in the middle of it.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(0usize));
    let mut senders = Vec::new();
    for t in 0..4 {
        let (stop, acked, url, ingest) = (
            stop.clone(),
            acked.clone(),
            c.url("/api/v1/ingest"),
            ingest.clone(),
        );
        senders.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let time = ago(Duration::minutes(5));
            let mut b = 0;
            while !stop.load(Ordering::Relaxed) {
                let body: String = (0..100)
                    .map(|i| {
                        let id = format!("t{t}-b{b}-{i}");
                        format!(
                            "{}\n",
                            record("acme", &id, "scan.completed", "ada@acme.example", &time)
                        )
                    })
                    .collect();
                let answered = client
                    .post(&url)
                    .bearer_auth(&ingest)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send();
                if answered.is_ok_and(|r| r.status().is_success()) {
                    *acked.lock().unwrap() += 100;
                }
                b += 1;
            }
        }));
    }
    std::thread::sleep(std::time::Duration::from_millis(2000));
    c.kill9();
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    let acked = *acked.lock().unwrap();
    assert!(acked >= 500, "a real stream was acknowledged: {acked}");

    c.restart();
    let first = head_matches_export(&c, "acme", &admin, &key);
    assert!(first.size as usize >= acked, "{} < {acked}", first.size);
    assert_eq!(first.origin, "codestax-collector/orgs/acme");

    // A changed byte, or another key, and the head does not verify.
    let (now, note) = checkpoint(&c, "acme", &admin, &key);
    let size_line = format!("\n{}\n", now.size);
    let forged = note.replacen(&size_line, &format!("\n{}\n", now.size + 1), 1);
    assert_ne!(forged, note);
    assert!(open(&forged, &key).is_err());
    let stranger = NoteSigner::new(key.name(), [9; 32]).unwrap().verifier();
    assert!(open(&note, &stranger).is_err());
    // Another org's key: 404.
    assert_eq!(
        c.get("/api/v1/orgs/acme/audit-log/checkpoint", &other)
            .status(),
        404
    );

    // Lose the tree directory: the restart rebuilds it from the index, to the same root, and
    // the kept head still holds (the export's own audit record came after it).
    assert!(c.stop());
    std::fs::remove_dir_all(dir.path().join("data/tree")).unwrap();
    c.restart();
    let rebuilt = head_matches_export(&c, "acme", &admin, &key);
    assert!(rebuilt.size >= first.size);
    let records = export(&c, "acme", &admin);
    let l = leaves(&records);
    assert_eq!(
        merkle::root(&mut Leaves(&l), first.size).unwrap(),
        first.root,
        "the rebuilt tree extends the first head"
    );
    // And a consistency proof from the first head to the current one verifies.
    let p = c.get_json(
        &format!(
            "/api/v1/orgs/acme/audit-log/proof/consistency?from={}",
            first.size
        ),
        &admin,
    );
    let to = p["to"].as_u64().unwrap();
    let proof = hashes(&p["proof"]);
    let head =
        Checkpoint::parse(open(p["signed_head"]["checkpoint"].as_str().unwrap(), &key).unwrap())
            .unwrap();
    assert_eq!(head.size, to);
    merkle::verify_consistency(first.size, to, &first.root, &head.root, &proof).unwrap();
}

/// `codestax_collector_retention_records_deleted_total`, summed over its series.
fn deleted(c: &Collector) -> f64 {
    c.metric("codestax_collector_retention_records_deleted_total")
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| {
            hex::decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect()
}

#[test]
fn after_retention_the_records_left_prove_against_the_same_root() {
    let dir = tempfile::tempdir().unwrap();
    // The records come in while the window is 30 days (ingest refuses a record already past
    // its window), then the collector restarts with 3 days: the janitor's first run comes
    // about 10 s after that start.
    let mut c = Collector::start(
        &dir.path().join("data"),
        "[retention]\ndefault_days = 30\njanitor_interval = \"1h\"\n",
    );
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let key = printed_key(&c);
    // Old records (past the window), new ones, and an old late arrival.
    let mut batch = Vec::new();
    for i in 0..20 {
        let t = ago(Duration::days(4));
        batch.push(record(
            "acme",
            &format!("old{i}"),
            "auth.login",
            "ada@acme.example",
            &t,
        ));
    }
    for i in 0..20 {
        let t = ago(Duration::hours(1));
        batch.push(record(
            "acme",
            &format!("new{i}"),
            "auth.login",
            "ada@acme.example",
            &t,
        ));
    }
    let late = ago(Duration::days(5));
    batch.push(record(
        "acme",
        "late",
        "auth.login",
        "ada@acme.example",
        &late,
    ));
    assert_eq!(c.ingest(&ingest, &batch).0, 200);
    c.restart_with("[retention]\ndefault_days = 3\njanitor_interval = \"1h\"\n")
        .unwrap();
    let (before, _) = checkpoint(&c, "acme", &admin, &key);
    assert_eq!(
        deleted(&c),
        0.0,
        "the head was taken before the janitor ran"
    );
    assert!(before.size >= 41);

    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while deleted(&c) < 21.0 {
        assert!(
            Instant::now() < deadline,
            "the janitor did not delete the 21 old records"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Every record left proves against the root signed before the deletes.
    let left = export(&c, "acme", &admin);
    let mut proved = 0;
    for r in left.iter().filter(|r| r.seq.unwrap() <= before.size) {
        let seq = r.seq.unwrap();
        let p = c.get_json(
            &format!(
                "/api/v1/orgs/acme/audit-log/proof/inclusion?seq={seq}&tree_size={}",
                before.size
            ),
            &admin,
        );
        let leaf = leaf_of_sealed(r).unwrap();
        merkle::verify_inclusion(
            &leaf,
            seq - 1,
            before.size,
            &hashes(&p["proof"]),
            &before.root,
        )
        .unwrap();
        proved += 1;
    }
    assert!(proved >= 20, "{proved}");
    assert!(
        proved as u64 <= before.size - 21,
        "the old records are gone"
    );
    // The head now extends the head from before (the tree lost nothing), and the chain
    // verifies from its retention checkpoint and tombstones.
    let (after, _) = checkpoint(&c, "acme", &admin, &key);
    let p = c.get_json(
        &format!(
            "/api/v1/orgs/acme/audit-log/proof/consistency?from={}&to={}",
            before.size, after.size
        ),
        &admin,
    );
    merkle::verify_consistency(
        before.size,
        after.size,
        &before.root,
        &after.root,
        &hashes(&p["proof"]),
    )
    .unwrap();
    let v = c.get_json("/api/v1/orgs/acme/audit-log/verify", &admin);
    assert_eq!(v["ok"], true, "{v}");
    assert!(
        v["signed_head"]["tree_size"].as_u64().unwrap() >= after.size,
        "{v}"
    );
}
