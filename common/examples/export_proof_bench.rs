//! Writes synthetic exports with proofs (`codestax-export/2`) to measure what the proof costs:
//! its share of the file, and `codestax verify`'s rate (time the release CLI on the files).
//!
//! ```text
//! cargo run --release -p codestax-common --example export_proof_bench -- 1000000 /tmp/xp
//! time target/release/codestax verify --input /tmp/xp/full.ndjson --public-key "$(cat /tmp/xp/vkey)"
//! ```
//!
//! Files: `full.ndjson` (every record, newest first, and the proof line — an unfiltered export
//! of a log a few records longer than the export, as the collector makes it), `records.ndjson`
//! (the same records without proof: the export before proofs, the baseline), `one-in-10.ndjson`
//! and `runs-of-100.ndjson` (filtered exports: every 10th record; 100 records out of every 1000).
//! Records are like the bench corpus's (about 400 bytes). Prints each file's size and its
//! proof's bytes.

use codestax_common::AuditRecord;
use codestax_common::chain::{ChainHead, Unsealed, record_leaf_hash};
use codestax_common::export_proof::{
    FORMAT, Manifest, NDJSON_PROOF_KEY, Proof, ProofBundle, b64, holes_digest, records_digest,
};
use codestax_common::merkle::{self, Hash, Leaves};
use codestax_common::note::{self, Checkpoint, NoteSigner};
use serde_json::json;
use std::io::Write;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).map_or(Ok(1_000_000), |a| a.parse())?;
    let dir = Path::new(
        args.get(2)
            .map_or("/tmp/export-proof-bench", |s| s.as_str()),
    );
    std::fs::create_dir_all(dir)?;
    let signer = NoteSigner::new("codestax-collector", [42; 32])?;
    std::fs::write(dir.join("vkey"), signer.verifier().to_string())?;

    // The log: n records and a few after the export's snapshot.
    let size = n + 5;
    let start = chrono::DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")?.to_utc();
    let actions = [
        "auth.login",
        "scan.triggered",
        "finding.triaged",
        "repository.connected",
    ];
    let mut head = ChainHead::genesis();
    let mut lines: Vec<String> = Vec::with_capacity(n as usize);
    let mut leaves: Vec<Hash> = Vec::with_capacity(size as usize);
    for i in 0..size {
        let r: AuditRecord = serde_json::from_value(json!({
            "id": format!("evt-{i:012}"),
            "org_id": "acme",
            "time": (start + chrono::Duration::milliseconds(i as i64 * 37)).to_rfc3339(),
            "actor": {"id": format!("u-{}", i % 500), "name": "Ada Lovelace",
                      "email": format!("user{}@acme.example", i % 500), "kind": "user"},
            "action": actions[(i % 4) as usize],
            "target": {"kind": "repository", "id": format!("r-{}", i % 80), "name": "acme/api"},
            "repository": "acme/api",
            "metadata": {"ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
                         "request_id": format!("{:016x}", i * 2_654_435_761)},
            "received_at": (start + chrono::Duration::milliseconds(i as i64 * 37 + 5)).to_rfc3339(),
            "provenance": {"writer": "ingest", "key_id": "key_0123456789abcdef"},
        }))?;
        let seq = head.seq + 1;
        let sealed = Unsealed::new(&r).seal(seq, &head.hash);
        let stored: AuditRecord = serde_json::from_str(&sealed.json)?;
        leaves.push(record_leaf_hash(&head.hash, &stored));
        head = ChainHead {
            seq,
            hash: sealed.hash.clone(),
        };
        if i < n {
            lines.push(serde_json::to_string(&stored)?);
        }
    }
    let root = merkle::root(&mut Leaves(&leaves), size)?;
    let checkpoint = signer.sign(
        &Checkpoint {
            origin: note::origin(signer.name(), "acme"),
            size,
            root,
            time: Some(start),
        }
        .text(),
    )?;

    let write = |name: &str, seqs: &[u64], filters: Option<&str>, with_proof: bool| {
        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(name))?);
        let mut bytes = 0u64;
        // Newest first: descending seq (times follow seq here).
        for s in seqs.iter().rev() {
            let l = &lines[*s as usize - 1];
            out.write_all(l.as_bytes())?;
            out.write_all(b"\n")?;
            bytes += l.len() as u64 + 1;
        }
        let mut proof_bytes = 0;
        if with_proof {
            let idx: Vec<u64> = seqs.iter().map(|s| s - 1).collect();
            let multi = merkle::multi_proof(&mut Leaves(&leaves), size, &idx)?
                .map_err(|e| e.to_string())?;
            let in_order: Vec<Hash> = seqs.iter().rev().map(|s| leaves[*s as usize - 1]).collect();
            let manifest = Manifest {
                org: "acme".into(),
                encoding: "ndjson".into(),
                filters: filters.map(str::to_string),
                retention_cutoff: None,
                tree_size: size,
                root,
                records: seqs.len() as u64,
                digest: records_digest(&in_order),
                holes: 0,
                holes_digest: holes_digest(&[]),
                file_sha256: None,
                created: start,
            };
            let bundle = ProofBundle {
                format: FORMAT.into(),
                manifest: signer.sign(&manifest.text())?,
                proof: Proof {
                    checkpoint: checkpoint.clone(),
                    multi_proof: multi.iter().map(b64).collect(),
                    holes: Vec::new(),
                    rows: None,
                },
            };
            let line = format!("{}\n", serde_json::json!({ NDJSON_PROOF_KEY: bundle }));
            out.write_all(line.as_bytes())?;
            proof_bytes = line.len() as u64;
        }
        out.flush()?;
        let total = bytes + proof_bytes;
        println!(
            "{name}: {} records, {total} bytes, proof {proof_bytes} bytes = {:.4} % of the file",
            seqs.len(),
            proof_bytes as f64 * 100.0 / total as f64
        );
        Ok::<(), Box<dyn std::error::Error>>(())
    };
    let all: Vec<u64> = (1..=n).collect();
    write("full.ndjson", &all, None, true)?;
    write("records.ndjson", &all, None, false)?;
    let tenth: Vec<u64> = (1..=n).filter(|s| s % 10 == 0).collect();
    write("one-in-10.ndjson", &tenth, Some("q=one-in-10"), true)?;
    let runs: Vec<u64> = (1..=n).filter(|s| s % 1000 < 100).collect();
    write("runs-of-100.ndjson", &runs, Some("q=runs-of-100"), true)?;
    Ok(())
}
