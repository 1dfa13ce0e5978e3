//! What the OCSF and ECS export formats cost per record, beside the NDJSON export they are
//! compared with: the export's own [`Encoder`] over the same stored records (canonical JSON, as
//! the index keeps them), one thread, in memory.
//!
//! `cargo bench -p codestax-collector --bench formats` (release build). `BENCH_RECORDS` sets the
//! number of records (default 100,000), `BENCH_ROUNDS` the rounds per format (default 7; the
//! median is reported, formats alternate round by round so drift hits all alike).

use codestax_collector::export::Encoder;
use codestax_common::api::ExportFormat;
use codestax_common::format::{Context, ecs, ocsf};
use codestax_common::{AuditRecord, CATALOG};
use serde_json::json;
use std::hint::black_box;
use std::time::Instant;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Varied records as the collector stores them: every catalogue action, targets of each kind,
/// metadata with changes and free-form keys, the chain and provenance set (~700 bytes each).
fn records(n: usize) -> Vec<AuditRecord> {
    let kinds = ["user", "scan", "repository", "finding", "api_key"];
    (0..n)
        .map(|i| {
            let action = CATALOG[i % CATALOG.len()].name;
            serde_json::from_value(json!({
                "id": format!("evt-{i:08}"), "org_id": format!("org-{}", i % 10),
                "time": "2026-11-27T10:15:30.123456Z",
                "actor": {"id": format!("u-{}", i % 97), "name": "Ada Lovelace",
                    "email": "ada@acme.example", "kind": "user"},
                "action": action, "category": action.split('.').next().unwrap(),
                "target": {"kind": kinds[i % kinds.len()], "id": format!("t-{i}"),
                    "name": "acme/api"},
                "repository": "acme/api",
                "outcome": if i % 9 == 0 { "failure" } else { "success" },
                "message": "Changed the default branch",
                "metadata": {"ip": "203.0.113.9", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
                    "changes": [{"field": "default_branch", "old": "master", "new": "main"}],
                    "ticket": format!("SEC-{}", i % 13)},
                "schema_version": 1, "received_at": "2026-11-27T10:15:31.000001Z",
                "seq": i as u64 + 1, "prev_hash": "ab".repeat(32),
                "provenance": {"writer": "ingest", "key_id": "k-1"}, "hash": "cd".repeat(32),
            }))
            .unwrap()
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo test --benches` runs this without `--bench`: nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n = env("BENCH_RECORDS", 100_000);
    let rounds = env("BENCH_ROUNDS", 7);
    let typed = records(n);
    let stored: Vec<String> = typed.iter().map(AuditRecord::canonical_json).collect();
    let stored_bytes: usize = stored.iter().map(String::len).sum();
    println!(
        "{n} records, {:.0} bytes each stored; {rounds} rounds, median",
        stored_bytes as f64 / n as f64
    );

    // The export's encoder: stored canonical JSON in, lines out.
    let formats = [ExportFormat::Ndjson, ExportFormat::Ocsf, ExportFormat::Ecs];
    let mut times = vec![Vec::new(); formats.len()];
    let mut sizes = vec![0usize; formats.len()];
    for _ in 0..rounds {
        for (i, &format) in formats.iter().enumerate() {
            let start = Instant::now();
            let mut e = Encoder::new(format, false).unwrap();
            let mut bytes = 0;
            for s in &stored {
                e.push_stored(s.as_bytes()).unwrap();
                if e.buffered() >= codestax_collector::export::CHUNK_BYTES {
                    bytes += black_box(e.take().unwrap()).len();
                }
            }
            bytes += e.finish().unwrap().len();
            times[i].push(start.elapsed().as_secs_f64());
            sizes[i] = bytes;
        }
    }
    println!("| export encoding (stored JSON → line) | µs / record | records/s | bytes / record |");
    println!("|---|---|---|---|");
    for (i, format) in formats.iter().enumerate() {
        let t = median(times[i].clone());
        println!(
            "| {} | {:.2} | {:.0} | {:.0} |",
            format.as_str(),
            t * 1e6 / n as f64,
            n as f64 / t,
            sizes[i] as f64 / n as f64
        );
    }

    // The mappings alone, from typed records (what a stream that holds records pays).
    let cx = Context::new(env!("CARGO_PKG_VERSION"));
    let mut map_times = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        let start = Instant::now();
        for r in &typed {
            black_box(ocsf::event(black_box(r), &cx));
        }
        map_times[0].push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        for r in &typed {
            black_box(ecs::document(black_box(r), &cx));
        }
        map_times[1].push(start.elapsed().as_secs_f64());
    }
    println!("| mapping only (record → serde_json::Value) | µs / record | records/s |");
    println!("|---|---|---|");
    for (name, t) in ["ocsf::event", "ecs::document"].iter().zip(map_times) {
        let t = median(t);
        println!(
            "| {name} | {:.2} | {:.0} |",
            t * 1e6 / n as f64,
            n as f64 / t
        );
    }
}
