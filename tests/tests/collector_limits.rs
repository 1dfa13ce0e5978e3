//! Hostile requests against the real collector: cost bounded by size, every error in the JSON
//! error shape.

use codestax_tests::Collector;
use serde_json::Value;

fn start() -> (tempfile::TempDir, Collector) {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"), "");
    (dir, c)
}

#[test]
fn a_body_of_200k_empty_objects_costs_its_size_and_gets_a_short_answer() {
    let (_dir, c) = start();
    let ingest = c.create_key("acme", "INGEST");
    // Warm up: the first rejections build lazily initialised state once.
    let r = c.post(
        "/api/v1/ingest",
        &ingest,
        "application/x-ndjson",
        b"{}\n{}\n".to_vec(),
    );
    assert_eq!(r.status(), 400);
    let before = c.memory_kib("VmHWM");

    let body = "{}\n".repeat(200_000).into_bytes();
    assert_eq!(body.len(), 600_000);
    let r = c.post("/api/v1/ingest", &ingest, "application/x-ndjson", body);
    assert_eq!(r.status(), 400);
    let text = r.text().unwrap();
    let growth_kib = c.memory_kib("VmHWM").saturating_sub(before);
    assert!(
        growth_kib < 64 * 1024,
        "peak RSS grew by {growth_kib} KiB for a 600 KB body"
    );
    assert!(
        text.len() < 64 * 1024,
        "a {} byte answer for one bad line repeated",
        text.len()
    );
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["error"]["code"], "invalid_records");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("200000 rejected"),
        "{answer}"
    );
    assert_eq!(answer["accepted"], 0);
    assert_eq!(answer["rejected"], 200_000);
    assert_eq!(answer["errors"].as_array().unwrap().len(), 50);
    assert_eq!(answer["errors"][49]["line"], 50);
    assert_eq!(answer["more_errors"], 199_950);
}

#[test]
fn ndjson_answers_list_50_rejections_and_count_the_rest() {
    let (_dir, c) = start();
    let ingest = c.create_key("acme", "INGEST");
    let good = codestax_tests::record(
        "acme",
        "ok-1",
        "auth.login",
        "ada@acme.example",
        &chrono::Utc::now().to_rfc3339(),
    );
    let mut body = format!("{good}\n");
    body.push_str(&"{\"unknown\":1}\n".repeat(120));
    let r = c.post(
        "/api/v1/ingest",
        &ingest,
        "application/x-ndjson",
        body.into_bytes(),
    );
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().unwrap();
    assert_eq!(answer["accepted"], 1);
    assert_eq!(answer["rejected"], 120);
    assert_eq!(answer["errors"].as_array().unwrap().len(), 50);
    assert_eq!(answer["errors"][0]["line"], 2);
    assert_eq!(answer["more_errors"], 70);
    // Metrics count every rejection, under a bounded reason label.
    let metrics = c.get("/metrics", "").text().unwrap();
    let counted: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("codestax_collector_records_rejected_total{") && l.contains("ndjson")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted, 120.0, "{metrics}");
}
