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
    let metrics = c.metrics();
    let counted: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("codestax_collector_records_rejected_total{") && l.contains("ndjson")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted, 120.0, "{metrics}");
}

/// The JSON error shape with `code`; panics with the raw answer otherwise.
fn json_error(r: reqwest::blocking::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().unwrap();
    assert_eq!(
        headers.get("content-type").map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "{status}: {text:?}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert!(body["error"]["code"].is_string(), "{status}: {text}");
    (status, headers, body)
}

#[test]
fn protocol_errors_duplicate_keys_body_limits_and_401s_over_real_http() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(
        &dir.path().join("data"),
        "[[orgs]]\nid = \"ent\"\nplan = \"enterprise\"\nretention_days = 30\n",
    );
    let owner = c.create_key("ent", "ORG_OWNER");
    let client = reqwest::blocking::Client::new();

    // Invalid UTF-8 after percent-decoding.
    let (status, _, body) = json_error(c.get("/api/v1/orgs/%FF/keys", &owner));
    assert_eq!(status, 400, "{body}");
    // A long request target and large headers, under hyper's own limits.
    let long = format!("/api/v1/orgs/ent/audit-log?q={}", "a".repeat(20_000));
    let (status, _, body) = json_error(c.get(&long, &owner));
    assert_eq!(status, 414, "{body}");
    let mut request = client.get(c.url("/api/v1/whoami")).bearer_auth(&owner);
    for i in 0..50 {
        request = request.header(format!("x-pad-{i}"), "p".repeat(1000));
    }
    let (status, _, body) = json_error(request.send().unwrap());
    assert_eq!(status, 431, "{body}");

    // 401s name the scheme.
    let (status, headers, _) = json_error(client.get(c.url("/api/v1/whoami")).send().unwrap());
    assert_eq!(status, 401);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer realm=\"codestax-audit\""
    );
    let (status, headers, _) = json_error(c.get("/api/v1/whoami", "wrong"));
    assert_eq!(status, 401);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\""),
        "{headers:?}"
    );

    // Duplicate keys are refused, not resolved to the last one.
    let retention = c.url("/api/v1/orgs/ent/settings/retention");
    let put = |body: &str| {
        client
            .put(&retention)
            .bearer_auth(&owner)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let (status, _, body) = json_error(put(r#"{"days":400,"days":1}"#));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "days");
    assert_eq!(
        c.get_json("/api/v1/orgs/ent/settings/retention", &owner)["days"],
        30
    );

    // Key creation reads a bounded body and never echoes a long name.
    let keys = c.url("/api/v1/orgs/ent/keys");
    let post = |body: String| {
        client
            .post(&keys)
            .bearer_auth(&owner)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap()
    };
    let huge = format!(r#"{{"role":"INGEST","name":"{}"}}"#, "n".repeat(2 << 20));
    let (status, _, body) = json_error(post(huge));
    assert_eq!(status, 413, "{body}");
    let long = format!(r#"{{"role":"INGEST","name":"{}"}}"#, "n".repeat(5000));
    let r = post(long);
    assert_eq!(r.status(), 400);
    let text = r.text().unwrap();
    assert!(text.len() < 1000, "{} byte answer", text.len());
    assert!(text.contains("\"field\":\"name\""), "{text}");
}
