//! Exports that carry their proofs (`codestax-export/2`), over a real collector and the real
//! `codestax` CLI: untouched full, filtered (JSON, NDJSON, CSV with its sidecar) and
//! post-retention exports verify with the collector's public key and no other flag; every kind
//! of tampering — a changed field, a deleted, inserted or moved record, a file cut at either
//! end, another org's record, a proof re-signed with another key, a forged tree head, an edited
//! manifest, a stripped proof, a hole moved past the cut-off — fails naming its place.

use chrono::{Duration, SecondsFormat, Utc};
use codestax_common::chain::{ChainHead, Unsealed};
use codestax_common::export_proof::{Manifest, ProofBundle};
use codestax_common::note::{self, Checkpoint, NoteSigner, VerifierKey};
use codestax_common::{AuditRecord, chain};
use codestax_tests::{Collector, bin, record, run_cli as cli};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

fn ago(d: Duration) -> String {
    (Utc::now() - d).to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn stdout_ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `codestax-collector signing-key`: the key, obtained apart from any export.
fn printed_key(c: &Collector) -> String {
    let out = Command::new(bin("codestax-collector"))
        .arg("--config")
        .arg(&c.config_path)
        .arg("signing-key")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn export(c: &Collector, work: &Path, token: &str, out: &str, extra: &[&str]) {
    let url = c.url("");
    let format = out.rsplit('.').next().unwrap();
    let mut args = vec![
        "export", "--format", format, "--output", out, "--url", &url, "--token", token,
    ];
    args.extend_from_slice(extra);
    stdout_ok(&cli(work, &args), &format!("export {out}"));
}

/// `codestax verify --input name --public-key key` on `content` written to `name`.
fn verify_text(work: &Path, name: &str, content: &str, key: &str) -> Output {
    std::fs::write(work.join(name), content).unwrap();
    cli(work, &["verify", "--input", name, "--public-key", key])
}

/// Asserts that verifying fails with a message starting with `place` and containing `why`.
fn fails(out: &Output, place: &str, why: &str, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "{what}: verified\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let msg = err
        .trim()
        .strip_prefix("codestax: verify failed: ")
        .unwrap_or(&err);
    assert!(
        msg.starts_with(place) && msg.contains(why),
        "{what}: expected `{place}` … `{why}`, got: {err}"
    );
}

/// The NDJSON export's record lines and its proof line.
fn split(text: &str) -> (Vec<String>, ProofBundle) {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let last = lines.pop().unwrap();
    let v: Value = serde_json::from_str(&last).unwrap();
    let bundle: ProofBundle = serde_json::from_value(v["codestax_proof"].clone()).unwrap();
    (lines, bundle)
}

fn join(lines: &[String], bundle: &ProofBundle) -> String {
    let mut s: String = lines.iter().map(|l| format!("{l}\n")).collect();
    s.push_str(&serde_json::json!({ "codestax_proof": bundle }).to_string());
    s.push('\n');
    s
}

/// `note`'s text, signed again by `signer` only.
fn resign(signed: &str, signer: &NoteSigner) -> String {
    let text = &signed[..signed.rfind("\n\n").unwrap() + 1];
    signer.sign(text).unwrap()
}

fn note_text(signed: &str) -> &str {
    &signed[..signed.rfind("\n\n").unwrap() + 1]
}

#[test]
fn exports_carry_their_proofs_and_every_tampering_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let c = Collector::start(&work.join("data"), "");
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let globex_ingest = c.create_key("globex", "INGEST");
    let globex_admin = c.create_key("globex", "ORG_ADMIN");
    let batch: Vec<Value> = (0..40)
        .map(|i| {
            let action = ["auth.login", "scan.triggered"][i % 2];
            record(
                "acme",
                &format!("e{i}"),
                action,
                "ada@acme.example",
                &ago(Duration::minutes(100 - i as i64)),
            )
        })
        .collect();
    assert_eq!(c.ingest(&ingest, &batch).0, 200);
    let other: Vec<Value> = (0..5)
        .map(|i| {
            record(
                "globex",
                &format!("g{i}"),
                "auth.login",
                "gus@globex.example",
                &ago(Duration::minutes(50)),
            )
        })
        .collect();
    assert_eq!(c.ingest(&globex_ingest, &other).0, 200);
    c.wait_for_total("acme", "action=scan.triggered", &admin, 20);
    c.wait_for_total("globex", "action=auth.login", &globex_admin, 5);

    let key = printed_key(&c);
    let served = c.get_json("/api/v1/signing-key", &admin);
    assert_eq!(served["verifier_key"], key.as_str());
    std::fs::write(work.join("collector.vkey"), format!("{key}\n")).unwrap();

    // Untouched exports verify, with no flag but the key (given as text, as a file, pinned in
    // the config file).
    export(&c, work, &admin, "all.ndjson", &[]);
    export(&c, work, &admin, "all.json", &[]);
    export(
        &c,
        work,
        &admin,
        "scans.ndjson",
        &["--action", "scan.triggered"],
    );
    export(
        &c,
        work,
        &admin,
        "scans.json",
        &["--action", "scan.triggered"],
    );
    export(&c, work, &admin, "all.csv", &[]);
    // OCSF and ECS map each record into another schema: bytes-only, like CSV.
    export(&c, work, &admin, "all.ocsf", &[]);
    export(&c, work, &admin, "all.ecs", &[]);
    export(&c, work, &globex_admin, "globex.ndjson", &[]);
    for name in ["all.csv", "all.ocsf", "all.ecs"] {
        assert!(
            work.join(format!("{name}.proof.json")).exists(),
            "the sidecar of {name}"
        );
    }
    for name in ["all.ndjson", "all.json", "all.csv", "all.ocsf", "all.ecs"] {
        let out = stdout_ok(
            &cli(work, &["verify", "--input", name, "--public-key", &key]),
            name,
        );
        assert!(
            out.starts_with(&format!("ok: signed by {key}; ")) && out.contains("unfiltered"),
            "{name}: {out}"
        );
    }
    for name in ["scans.ndjson", "scans.json"] {
        let out = stdout_ok(
            &cli(
                work,
                &["verify", "--input", name, "--public-key", "collector.vkey"],
            ),
            name,
        );
        assert!(
            out.contains("20 records of org acme")
                && out.contains("filtered by action=scan.triggered")
                && out.contains("rests on trusting the collector"),
            "{name}: {out}"
        );
    }
    std::fs::write(work.join("cli.toml"), format!("public_key = \"{key}\"\n")).unwrap();
    let out = stdout_ok(
        &cli(
            work,
            &["verify", "--input", "scans.ndjson", "--config", "cli.toml"],
        ),
        "pinned key",
    );
    assert!(out.starts_with("ok: signed by"), "{out}");
    // Without a key the structure is checked, and the output says the origin is not.
    let out = stdout_ok(&cli(work, &["verify", "--input", "all.ndjson"]), "no key");
    assert!(out.contains("UNSIGNED CHECK"), "{out}");
    // --allow-gaps is refused for an export that proves its gaps.
    let out = cli(work, &["verify", "--input", "scans.ndjson", "--allow-gaps"]);
    assert!(!out.status.success());

    let text = std::fs::read_to_string(work.join("all.ndjson")).unwrap();
    let (lines, bundle) = split(&text);
    let n = lines.len();
    assert_eq!(n, 42, "40 records and the two key creations");
    let records: Vec<AuditRecord> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seq_at = |i: usize| records[i].seq.unwrap();
    let t = |name: &str, content: String| verify_text(work, name, &content, &key);

    // A changed field.
    let mut changed = lines.clone();
    changed[2] = changed[2].replace("ada@acme.example", "eve@acme.example");
    fails(
        &t("changed.ndjson", join(&changed, &bundle)),
        &format!("line 3 (seq {}): ", seq_at(2)),
        "does not match its hash",
        "changed",
    );
    // A deleted record (inside the span): the record after it in seq order is named.
    let line_of = |lines: &[String], seq: u64| {
        1 + lines
            .iter()
            .position(|l| serde_json::from_str::<AuditRecord>(l).unwrap().seq == Some(seq))
            .unwrap()
    };
    let gone = seq_at(10);
    let mut deleted = lines.clone();
    deleted.remove(10);
    fails(
        &t("deleted.ndjson", join(&deleted, &bundle)),
        &format!(
            "line {} (seq {}): seq {gone} is missing",
            line_of(&deleted, gone + 1),
            gone + 1
        ),
        "not name it as a retention hole",
        "deleted",
    );
    // A record inserted: forged on top of the chain (the highest seq), valid on its own.
    let top: AuditRecord = records.iter().max_by_key(|r| r.seq).unwrap().clone();
    let mut forged = top.clone();
    forged.id = Some("forged".into());
    forged.time = records[0].time + Duration::seconds(1);
    let head = ChainHead::of(&top).unwrap();
    let sealed = Unsealed::new(&AuditRecord {
        seq: None,
        prev_hash: None,
        hash: None,
        ..forged
    })
    .seal(head.seq + 1, &head.hash);
    let mut inserted = lines.clone();
    inserted.insert(0, sealed.json.clone());
    fails(
        &t("inserted.ndjson", join(&inserted, &bundle)),
        "file: ",
        "records were added",
        "inserted",
    );
    // A forged record in place of a real one, its seq and chain kept: only the tree knows.
    let mut replaced_rec: AuditRecord = records[3].clone();
    replaced_rec.action = "auth.logout".into();
    replaced_rec.hash = Some(chain::record_hash(
        replaced_rec.prev_hash.as_deref().unwrap(),
        &replaced_rec,
    ));
    let mut replaced = lines.clone();
    replaced[3] = serde_json::to_string(&replaced_rec).unwrap();
    let out = t("replaced.ndjson", join(&replaced, &bundle));
    assert!(!out.status.success(), "replaced");
    // Reordered.
    let mut moved = lines.clone();
    moved.swap(6, 7);
    fails(
        &t("moved.ndjson", join(&moved, &bundle)),
        &format!("line 8 (seq {}): out of order", seq_at(6)),
        "",
        "reordered",
    );
    // Cut at the newest end, and at the oldest end (the first and last lines; the newest
    // records by time are the key creations, seq 1 and 2): a seq missing, named where it is.
    for (what, cut, first_line) in [("top", &lines[1..], 0), ("bottom", &lines[..n - 1], n - 1)] {
        let gone = seq_at(first_line);
        let out = t("cut.ndjson", join(cut, &bundle));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "cut at the {what}");
        assert!(
            err.contains(&format!("seq {gone} is missing"))
                || err.contains(&format!("holds {} records; the manifest signs {n}", n - 1)),
            "cut at the {what}: {err}"
        );
    }
    // The proof stripped: with a key, nothing can be checked.
    fails(
        &t(
            "stripped.ndjson",
            lines.iter().map(|l| format!("{l}\n")).collect(),
        ),
        "proof: ",
        "carries no proof",
        "stripped",
    );
    // Another org's record in place of one of acme's.
    let globex = std::fs::read_to_string(work.join("globex.ndjson")).unwrap();
    let (globex_lines, _) = split(&globex);
    let mut swapped = lines.clone();
    swapped[5] = globex_lines[0].clone();
    let out = t("swapped.ndjson", join(&swapped, &bundle));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 6") && err.contains("globex"), "{err}");

    // Re-signed with another key of the same name: refused.
    let name = key.split('+').next().unwrap();
    let other = NoteSigner::new(name, [7; 32]).unwrap();
    let mut resigned = bundle.clone();
    resigned.manifest = resign(&bundle.manifest, &other);
    resigned.proof.checkpoint = resign(&bundle.proof.checkpoint, &other);
    fails(
        &t("resigned.ndjson", join(&lines, &resigned)),
        "manifest: ",
        "no signature by key",
        "re-signed",
    );
    // ... and it verifies with that other key only if one trusts it: the key is never the file's.
    let out = cli(
        work,
        &[
            "verify",
            "--input",
            "resigned.ndjson",
            "--public-key",
            &other.verifier().to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "the forger's own key of course verifies its notes"
    );
    // A forged tree head: another root under the real signature.
    let cp = Checkpoint::parse(note_text(&bundle.proof.checkpoint)).unwrap();
    let sig = &bundle.proof.checkpoint[bundle.proof.checkpoint.rfind("\n\n").unwrap()..];
    let forged_head = Checkpoint {
        root: [9; 32],
        ..cp.clone()
    }
    .text()
        + &sig[1..];
    let mut forged = bundle.clone();
    forged.proof.checkpoint = forged_head;
    fails(
        &t("forged-head.ndjson", join(&lines, &forged)),
        "proof.checkpoint: ",
        "does not verify",
        "forged head",
    );
    // The manifest's filters or count edited under its signature.
    for (what, from, to) in [
        ("filters", "filters unfiltered", "filters action=auth.login"),
        (
            "count",
            &format!("records {n} "),
            &format!("records {} ", n - 1),
        ),
    ] {
        let mut edited = bundle.clone();
        assert!(edited.manifest.contains(from), "{what}");
        edited.manifest = edited.manifest.replace(from, to);
        fails(
            &t("edited.ndjson", join(&lines, &edited)),
            "manifest: ",
            "does not verify",
            what,
        );
    }
    // A multi-proof hash changed: in the filtered export's, which always has some (an
    // unfiltered export's may hold every leaf of the head it is proven against, and need none).
    let (scan_lines, scan_bundle) =
        split(&std::fs::read_to_string(work.join("scans.ndjson")).unwrap());
    let mut bad_proof = scan_bundle;
    assert!(!bad_proof.proof.multi_proof.is_empty());
    bad_proof.proof.multi_proof[0] = "A".repeat(43) + "=";
    fails(
        &t("bad-proof.ndjson", join(&scan_lines, &bad_proof)),
        "proof.multi_proof: ",
        "do not lead to the signed root",
        "multi-proof",
    );
    // A record after the proof line.
    fails(
        &t("after.ndjson", join(&lines, &bundle) + &lines[0] + "\n"),
        &format!("line {}: ", n + 2),
        "after the proof",
        "after the proof line",
    );

    // JSON: the same checks name records.
    let json = std::fs::read_to_string(work.join("all.json")).unwrap();
    let mut doc: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["format"], "codestax-export/2");
    doc["records"][1]["actor"]["email"] = "eve@acme.example".into();
    fails(
        &verify_text(work, "changed.json", &doc.to_string(), &key),
        &format!("record 2 (seq {}): ", doc["records"][1]["seq"]),
        "does not match its hash",
        "changed JSON",
    );

    // CSV: the sidecar binds the bytes.
    let csv = std::fs::read_to_string(work.join("all.csv")).unwrap();
    std::fs::write(
        work.join("all.csv"),
        csv.replacen("ada@acme.example", "eve@acme.example", 1),
    )
    .unwrap();
    fails(
        &cli(
            work,
            &["verify", "--input", "all.csv", "--public-key", &key],
        ),
        "file: ",
        "the file was changed",
        "changed CSV",
    );
    let ocsf = std::fs::read_to_string(work.join("all.ocsf")).unwrap();
    std::fs::write(
        work.join("all.ocsf"),
        ocsf.replacen("ada@acme.example", "eve@acme.example", 1),
    )
    .unwrap();
    fails(
        &cli(
            work,
            &["verify", "--input", "all.ocsf", "--public-key", &key],
        ),
        "file: ",
        "the file was changed",
        "changed OCSF",
    );
    // A later export: the log only grew since the first one's head (the consistency proof is
    // fetched from the collector and checked against both signed heads); not so against
    // another org's head, nor backwards.
    let more: Vec<Value> = (0..3)
        .map(|i| {
            record(
                "acme",
                &format!("more{i}"),
                "auth.login",
                "ada@acme.example",
                &ago(Duration::minutes(1)),
            )
        })
        .collect();
    assert_eq!(c.ingest(&ingest, &more).0, 200);
    c.wait_for_total("acme", "action=auth.login", &admin, 23);
    export(&c, work, &admin, "later.ndjson", &[]);
    let url = c.url("");
    let since = |input: &str, earlier: &str| {
        cli(
            work,
            &[
                "verify",
                "--input",
                input,
                "--public-key",
                &key,
                "--since",
                earlier,
                "--url",
                &url,
                "--token",
                &admin,
            ],
        )
    };
    let out = stdout_ok(&since("later.ndjson", "all.ndjson"), "--since");
    assert!(
        out.lines()
            .nth(1)
            .unwrap()
            .starts_with("and the log only grew: tree size"),
        "{out}"
    );
    let out = stdout_ok(
        &since("later.ndjson", "all.csv.proof.json"),
        "--since a sidecar",
    );
    assert!(out.contains("only grew"), "{out}");
    fails(
        &since("later.ndjson", "globex.ndjson"),
        "--since: ",
        "is of log",
        "another org's head",
    );
    fails(
        &since("all.ndjson", "later.ndjson"),
        "--since: ",
        "this export is older",
        "backwards",
    );

    let m = Manifest::parse(note_text(&bundle.manifest)).unwrap();
    assert_eq!(
        (m.org.as_str(), m.records as usize, m.filters),
        ("acme", n, None)
    );
    // The head is an ordinary C2SP checkpoint of the org's log.
    let vkey = VerifierKey::parse(&key).unwrap();
    let opened = note::open(&bundle.proof.checkpoint, &vkey).unwrap();
    assert_eq!(
        Checkpoint::parse(opened).unwrap().origin,
        format!("{name}/orgs/acme")
    );
}

#[test]
fn after_retention_an_unfiltered_export_names_its_holes_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    // The records come in while the window is 30 days (ingest refuses a record already past
    // its window), then the collector restarts with 3 days: the janitor's first run comes
    // about 10 s after that start.
    let mut c = Collector::start(
        &work.join("data"),
        "[retention]\ndefault_days = 30\njanitor_interval = \"1h\"\n",
    );
    let ingest = c.create_key("acme", "INGEST");
    let admin = c.create_key("acme", "ORG_ADMIN");
    let key = printed_key(&c);
    // Old records (a prefix), new ones, a late arrival in the middle, more new ones.
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.push(record(
            "acme",
            &format!("old{i}"),
            "auth.login",
            "a@x.example",
            &ago(Duration::days(4)),
        ));
    }
    for i in 0..5 {
        batch.push(record(
            "acme",
            &format!("new{i}"),
            "auth.login",
            "a@x.example",
            &ago(Duration::hours(2)),
        ));
    }
    batch.push(record(
        "acme",
        "late",
        "auth.login",
        "a@x.example",
        &ago(Duration::days(5)),
    ));
    for i in 5..10 {
        batch.push(record(
            "acme",
            &format!("new{i}"),
            "auth.login",
            "a@x.example",
            &ago(Duration::hours(1)),
        ));
    }
    assert_eq!(c.ingest(&ingest, &batch).0, 200);
    c.restart_with("[retention]\ndefault_days = 3\njanitor_interval = \"1h\"\n")
        .unwrap();
    c.wait_for_total("acme", "action=auth.login", &admin, 10);
    // The key creations (seq 1, 2, the newest records) open the span, so the 5 old records
    // and the late arrival are its holes.
    let holes_wanted = |out: &str| {
        assert!(out.contains("6 record(s) retention explains"), "{out}");
    };
    // Before the janitor: the late arrival is hidden by the window, not yet deleted.
    let deleted_before = c.metrics().lines().any(|l| {
        l.starts_with("codestax_collector_retention_records_deleted_total") && !l.ends_with(" 0")
    });
    export(&c, work, &admin, "before.ndjson", &[]);
    if !deleted_before {
        let out = stdout_ok(
            &cli(
                work,
                &["verify", "--input", "before.ndjson", "--public-key", &key],
            ),
            "before the janitor",
        );
        holes_wanted(&out);
    }
    // After the janitor: the late arrival is a tombstone with its time.
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let deleted = c.metric("codestax_collector_retention_records_deleted_total");
        if deleted >= 6.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the janitor did not delete the old records"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    export(&c, work, &admin, "after.ndjson", &[]);
    export(&c, work, &admin, "after.json", &[]);
    for name in ["after.ndjson", "after.json"] {
        let out = stdout_ok(
            &cli(work, &["verify", "--input", name, "--public-key", &key]),
            name,
        );
        holes_wanted(&out);
    }
    // A hole whose time is moved past the cut-off, or a hole removed: named.
    let text = std::fs::read_to_string(work.join("after.ndjson")).unwrap();
    let (lines, bundle) = split(&text);
    assert_eq!(
        bundle.proof.holes.len(),
        6,
        "the old records and the late arrival"
    );
    let hole = bundle.proof.holes[5].seq;
    let mut moved = bundle.clone();
    moved.proof.holes[0].time = Utc::now();
    fails(
        &verify_text(work, "moved-hole.ndjson", &join(&lines, &moved), &key),
        "proof.holes: ",
        "not the 6 hole(s) the manifest signs",
        "moved hole",
    );
    let mut dropped = bundle.clone();
    dropped.proof.holes.clear();
    fails(
        &verify_text(work, "dropped-hole.ndjson", &join(&lines, &dropped), &key),
        "proof.holes: ",
        "not the 6 hole(s)",
        "dropped hole",
    );
    // The record next to the hole deleted as well: not retention's, named.
    let at = lines
        .iter()
        .position(|l| serde_json::from_str::<AuditRecord>(l).unwrap().seq == Some(hole + 1))
        .unwrap();
    let mut deleted = lines.clone();
    deleted.remove(at);
    fails(
        &verify_text(
            work,
            "deleted-near-hole.ndjson",
            &join(&deleted, &bundle),
            &key,
        ),
        "line ",
        &format!("seq {} is missing", hole + 1),
        "deleted beside the hole",
    );
}
