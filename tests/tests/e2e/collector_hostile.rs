//! Hostile requests against the real collector: cost bounded by size, every error in the JSON
//! error shape.

use codestax_tests::{Collector, CollectorOptions};
use serde_json::Value;
use std::time::Duration;

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

/// OTLP bodies of tiny messages: decoded whole, 8 MB of empty LogRecords took a release build's
/// peak RSS to 759 MB (a 2-byte message becomes a ~200-byte struct in a doubling `Vec`), so this
/// test's 2 MB to ~190 MB; decoded one LogRecord at a time, 35 MB in all.
#[test]
fn otlp_bodies_of_empty_log_records_cost_their_size() {
    // What is measured is memory, not time: a debug build on a loaded 2-core machine took over
    // the default 30 s request deadline to refuse 1M records, which answered 408.
    let dir = tempfile::tempdir().unwrap();
    let mut options = CollectorOptions::for_tests(
        &dir.path().join("data"),
        "[limits]\nrequest_timeout = \"5m\"\n",
    );
    options.request_timeout = Duration::from_secs(300);
    let mut c = Collector::configure(options).unwrap();
    c.launch().unwrap();
    let ingest = c.create_key("acme", "INGEST");
    let frame = |tag: u8, inner: &[u8]| {
        let mut out = vec![tag];
        prost::encoding::encode_varint(inner.len() as u64, &mut out);
        out.extend_from_slice(inner);
        out
    };
    // ExportLogsServiceRequest.resource_logs (1) > ResourceLogs.scope_logs (2) > log_records (2).
    let protobuf = |log_records: &[u8]| frame(0x0a, &frame(0x12, log_records));
    let n = 1_000_000;
    let json = |records: &str| {
        format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{records}]}}]}}]}}"#)
    };
    // Warm up: the first rejections build lazily initialised state once.
    for (content_type, body) in [
        ("application/x-protobuf", protobuf(&[0x12, 0x00])),
        ("application/json", json("{}").into_bytes()),
    ] {
        assert_eq!(
            c.post("/v1/logs", &ingest, content_type, body).status(),
            400
        );
    }
    let before = c.memory_kib("VmHWM");
    for (content_type, body) in [
        ("application/x-protobuf", protobuf(&[0x12, 0x00].repeat(n))),
        (
            "application/json",
            json(&vec!["{}"; n * 2 / 3].join(",")).into_bytes(),
        ),
    ] {
        let size = body.len();
        let sent = std::time::Instant::now();
        let r = c.post("/v1/logs", &ingest, content_type, body);
        assert_eq!(r.status(), 400, "{content_type}");
        let text = r.text().unwrap();
        assert!(
            text.len() < 64 * 1024,
            "{content_type}: a {} byte answer",
            text.len()
        );
        assert!(
            text.contains("more"),
            "{content_type}: {}",
            &text[..text.len().min(500)]
        );
        eprintln!("{content_type}: refused in {:?}", sent.elapsed());
        let growth_kib = c.memory_kib("VmHWM").saturating_sub(before);
        assert!(
            growth_kib < 64 * 1024,
            "{content_type}: peak RSS grew by {growth_kib} KiB for a {size} byte body"
        );
    }
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
    let counted = codestax_harness::metric_sum(
        &metrics,
        r#"codestax_collector_records_rejected_total{receiver="ndjson","#,
    );
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

/// `ingest.max_record_bytes` bounds a record's canonical JSON exactly (counted, not built, since
/// session 16): at the limit it is stored, one byte over it is rejected naming `record`, over
/// NDJSON and OTLP alike, and the rest of the batch goes through.
#[test]
fn the_record_size_limit_is_exact_on_every_receiver() {
    const LIMIT: usize = 1024;
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(
        &dir.path().join("data"),
        &format!("[ingest]\nmax_record_bytes = {LIMIT}\n"),
    );
    let ingest = c.create_key("acme", "INGEST");
    let now = codestax_tests::now_rfc3339();
    // The record as the collector parses it, its message padded to `size` bytes of canonical JSON.
    let sized = |id: &str, size: usize| {
        let mut r = codestax_tests::record("acme", id, "auth.login", "ada@acme.example", &now);
        r["message"] = Value::from("");
        let rules = codestax_common::Rules {
            max_record_bytes: usize::MAX,
            ..codestax_common::Rules::default()
        };
        let parsed = codestax_common::parse_json_line(r.to_string().as_bytes(), None, &rules)
            .expect("a valid record");
        let base = parsed.canonical_json().len();
        assert!(base < size, "{base} bytes without a message");
        r["message"] = Value::from("m".repeat(size - base));
        r
    };
    let (status, answer) = c.ingest(
        &ingest,
        &[sized("at-limit", LIMIT), sized("over-limit", LIMIT + 1)],
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert_eq!(answer["rejected"], 1, "{answer}");
    assert_eq!(answer["errors"][0]["line"], 2, "{answer}");
    let error = &answer["errors"][0]["errors"][0];
    assert_eq!(error["field"], "record", "{answer}");
    assert_eq!(
        error["reason"],
        format!(
            "{} bytes serialised, over the limit of {LIMIT} bytes",
            LIMIT + 1
        ),
        "{answer}"
    );
    let admin = c.create_key("acme", "ORG_ADMIN");
    // The collector's own entries (the keys made) are in the org's log too.
    c.wait_for_total("acme", "action=auth.login", &admin, 1);
    let stored = c.search_all("acme", "action=auth.login", &admin);
    let ids: Vec<&str> = stored.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids, ["at-limit"]);

    // OTLP: the same check on the record its attributes make.
    let note = "n".repeat(2 * LIMIT);
    let body = codestax_tests::otlp_json(
        "acme",
        "otlp",
        1,
        "auth.login",
        &[("audit.metadata.note", note.as_str())],
    );
    let r = c.post(
        "/v1/logs",
        &ingest,
        "application/json",
        body.to_string().into_bytes(),
    );
    // Its only record refused: the whole request is.
    let status = r.status();
    let text = r.text().unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains(&format!(
            "bytes serialised, over the limit of {LIMIT} bytes"
        )),
        "{text}"
    );
}
