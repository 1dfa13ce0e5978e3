//! Nothing unauthenticated names an org (`/metrics` has its own listener; per-org series only when
//! the operator opts in), and ingest rate limits per key and per org: 429 + Retry-After over
//! HTTP, RESOURCE_EXHAUSTED with a retry delay over gRPC, and an agent that waits and delivers
//! everything exactly once.

use codestax_tests::{Agent, AgentOptions, Collector, bin, now_rfc3339, otlp_json, record};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

/// Org ids no other text of a response could contain by chance.
const ORG_A: &str = "zeta-tenant-one";
const ORG_B: &str = "zeta-tenant-two";

/// `n` valid records of `org`, ids `{prefix}-0..`.
fn records(org: &str, prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            record(
                org,
                &format!("{prefix}-{i}"),
                "auth.login",
                "ada@example.com",
                &now_rfc3339(),
            )
        })
        .collect()
}

fn anonymous_get(url: &str) -> (u16, String, String) {
    let r = reqwest::blocking::get(url).expect("GET");
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, content_type, r.text().expect("body"))
}

/// Ingests into both orgs and waits for a janitor run that saw them (its per-org figures are the
/// series that name orgs when `metrics.per_org` is on); returns that scrape.
fn metrics_after_ingest_into_two_orgs(per_org: bool) -> (tempfile::TempDir, Collector, String) {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(
        &dir.path().join("data"),
        &format!("[retention]\njanitor_interval = \"1s\"\n[metrics]\nper_org = {per_org}\n"),
    );
    for org in [ORG_A, ORG_B] {
        let ingest = c.create_key(org, "INGEST");
        let (status, body) = c.ingest(&ingest, &records(org, "m", 3));
        assert_eq!(status, 200, "{body}");
        let admin = c.create_key(org, "ORG_ADMIN");
        c.wait_for_total(org, "action=auth.login", &admin, 3);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = c.metrics();
        let seen = if per_org {
            [ORG_A, ORG_B].iter().all(|org| {
                text.contains(&format!(
                    "codestax_collector_retention_oldest_record_age_seconds{{org=\"{org}\"}} "
                ))
            })
        } else {
            text.contains("\ncodestax_collector_retention_oldest_record_age_seconds ")
        };
        if seen {
            return (dir, c, text);
        }
        assert!(
            Instant::now() < deadline,
            "no janitor run with both orgs within 30 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn nothing_unauthenticated_names_an_org_and_metrics_have_their_own_listener() {
    let (_dir, c, text) = metrics_after_ingest_into_two_orgs(false);
    // The metrics listener serves Prometheus text, with no org id in it.
    let (status, content_type, scraped) = anonymous_get(&c.metrics_url("/metrics"));
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(
        scraped.contains("# TYPE codestax_collector_records_accepted counter"),
        "{scraped}"
    );
    for text in [&text, &scraped] {
        assert!(!text.contains("org="), "{text}");
        assert!(!text.contains(ORG_A) && !text.contains(ORG_B), "{text}");
    }
    // Anything else on the metrics listener is a JSON 404.
    let (status, _, body) = anonymous_get(&c.metrics_url("/api/v1/whoami"));
    assert_eq!(status, 404);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "not_found", "{body}");

    // The API port: no /metrics (a JSON 404), and no anonymous answer names an org.
    let (status, _, body) = anonymous_get(&c.url("/metrics"));
    assert_eq!(status, 404, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["code"], "not_found", "{json}");
    for path in [
        "/metrics",
        "/healthz",
        "/readyz",
        "/",
        "/settings/audit-log",
        "/dashboard/audit-log.js",
        "/api/v1/whoami",
        &format!("/api/v1/orgs/{ORG_A}/audit-log"),
        "/no/such/route",
    ] {
        let (status, _, body) = anonymous_get(&c.url(path));
        assert!(status < 500, "{path}: {status}");
        assert!(
            !body.contains(ORG_B) && !body.replace(&format!("/orgs/{ORG_A}/"), "").contains(ORG_A),
            "{path} names an org: {body}"
        );
    }
}

#[test]
fn per_org_series_name_orgs_only_when_the_operator_opts_in() {
    let (_dir, _c, text) = metrics_after_ingest_into_two_orgs(true);
    for org in [ORG_A, ORG_B] {
        assert!(text.contains(&format!("org=\"{org}\"")), "{text}");
    }
}

#[test]
fn ingest_limits_are_off_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"), "");
    let ingest = c.create_key(ORG_A, "INGEST");
    for batch in 0..10 {
        let (status, body) = c.ingest(&ingest, &records(ORG_A, &format!("b{batch}"), 1000));
        assert_eq!(status, 200, "batch {batch}: {body}");
        assert_eq!(body["accepted"], 1000, "{body}");
    }
    assert!(
        !c.metrics()
            .contains("codestax_collector_ingest_records_rate_limited_total{"),
        "nothing refused"
    );
}

/// The JSON error of a 429 and its `Retry-After`, in seconds.
fn refused(r: reqwest::blocking::Response) -> (Value, u64) {
    assert_eq!(r.status(), 429);
    let retry_after = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    (body, retry_after)
}

fn ndjson(records: &[Value]) -> Vec<u8> {
    records
        .iter()
        .map(|r| r.to_string() + "\n")
        .collect::<String>()
        .into_bytes()
}

/// Seconds since `start`, an upper bound on how long a bucket refilled between two requests
/// sent after it.
fn secs_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// A refusal below is certain only while the bucket cannot have refilled: `elapsed` seconds
/// (measured around the requests) must be under `margin`. The limits are slow enough (1 record
/// a second) that this holds by seconds; past it the test could conclude nothing.
fn assert_within(elapsed: f64, margin: f64, what: &str) {
    assert!(
        elapsed < margin,
        "{what}: the steps took {elapsed:.1} s, the bucket may have refilled (margin {margin} s)"
    );
}

#[test]
fn a_key_over_its_limit_gets_429_with_retry_after_on_every_receiver_and_others_are_not_touched() {
    let dir = tempfile::tempdir().unwrap();
    // 1 record a second: each refusal below is certain for seconds, not a fraction of one, so
    // it does not depend on how fast the steps run; the waits are checked against their time.
    let c = Collector::start(
        &dir.path().join("data"),
        "[limits]\ningest_records_per_second_per_key = 1\ningest_burst_records_per_key = 20\n",
    );
    let flood = c.create_key(ORG_A, "INGEST");
    let big = c.create_key(ORG_A, "INGEST");
    let other_org = c.create_key(ORG_B, "INGEST");
    let admin = c.create_key(ORG_A, "ORG_ADMIN");
    let ndjson_post =
        |token: &str, body: &[Value]| c.post("/api/v1/ingest", token, "", ndjson(body));

    // The burst goes through; the next batch is refused whole, with a wait to retry after:
    // 10 records at 1/s, less what came back since the burst.
    let burst_sent = Instant::now();
    let r = ndjson_post(&flood, &records(ORG_A, "burst", 20));
    assert_eq!(r.status(), 200);
    let r = ndjson_post(&flood, &records(ORG_A, "late", 10));
    let since_burst = secs_since(burst_sent);
    assert_within(since_burst, 10.0, "10 records after the burst");
    let (body, retry_after) = refused(r);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("rate limit of this key exceeded (1 records per second, bursts of 20)"),
        "{message}"
    );
    assert!(
        retry_after <= 10 && retry_after as f64 >= (10.0 - since_burst).ceil(),
        "10 records at 1/s, {since_burst:.1} s after the burst: {body}"
    );

    // Another org's key is not refused meanwhile.
    let r = ndjson_post(&other_org, &records(ORG_B, "b", 20));
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());

    // After the wait, the same batch goes through.
    std::thread::sleep(Duration::from_secs(retry_after));
    let r = ndjson_post(&flood, &records(ORG_A, "late", 10));
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());

    // OTLP/HTTP: the same 429 and Retry-After, the body a google.rpc.Status as OTLP/HTTP
    // specifies (RESOURCE_EXHAUSTED, in the request's encoding). 30 records taken from a full
    // 20 at 1/s: 10 are back only 20 s after the burst.
    let body = otlp_json(ORG_A, "otlp", 10, "team.member_invited", &[])
        .to_string()
        .into_bytes();
    let r = c.post("/v1/logs", &flood, "application/json", body);
    assert_within(
        secs_since(burst_sent),
        20.0,
        "OTLP/HTTP after the late batch",
    );
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    let status: Value = r.json().unwrap();
    assert_eq!(status["code"], 8, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("rate limit of this key exceeded"),
        "{status}"
    );

    // OTLP/gRPC: RESOURCE_EXHAUSTED with the retry delay in RetryInfo.
    let request: ExportLogsServiceRequest =
        serde_json::from_value(otlp_json(ORG_A, "grpc", 10, "team.member_invited", &[])).unwrap();
    let status = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut client = LogsServiceClient::connect(c.grpc_endpoint()).await.unwrap();
        let mut request = tonic::Request::new(request);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {flood}").parse().unwrap());
        client.export(request).await.unwrap_err()
    });
    assert_within(
        secs_since(burst_sent),
        20.0,
        "OTLP/gRPC after the late batch",
    );
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    use tonic_types::StatusExt;
    let delay = status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(10),
        "{delay:?}"
    );

    // A batch larger than the burst is taken while the key's allowance is full (a key not used
    // yet), then the key waits until its average is back under the limit: 30 to repay at 1/s,
    // then the record.
    let big_sent = Instant::now();
    let r = ndjson_post(&big, &records(ORG_A, "big", 50));
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let r = ndjson_post(&big, &records(ORG_A, "after-big", 1));
    let since_big = secs_since(big_sent);
    assert_within(since_big, 31.0, "1 record after the big batch");
    let (_, retry_after) = refused(r);
    assert!(
        retry_after <= 31 && retry_after as f64 >= (31.0 - since_big).ceil(),
        "50 taken from 20 leaves 30 to repay at 1/s, {since_big:.1} s ago: {retry_after}"
    );

    // Only what was acknowledged is stored; refused records are counted, with no org label.
    c.wait_for_total(ORG_A, "action=auth.login", &admin, 80);
    let text = c.metrics();
    let refused_records: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("codestax_collector_ingest_records_rate_limited_total{scope=\"key\"} ")
        })
        .unwrap_or_else(|| panic!("no rate-limited counter in {text}"))
        .parse()
        .unwrap();
    assert_eq!(refused_records, 10.0 + 10.0 + 10.0 + 1.0, "{text}");
    assert!(!text.contains(ORG_A), "{text}");
}

#[test]
fn an_org_limit_covers_all_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    // 1 record a second, as above: the refusal is certain for 10 s, not 1.
    let c = Collector::start(
        &dir.path().join("data"),
        "[limits]\ningest_records_per_second_per_org = 1\ningest_burst_records_per_org = 30\n",
    );
    let first = c.create_key(ORG_A, "INGEST");
    let second = c.create_key(ORG_A, "INGEST");
    let other_org = c.create_key(ORG_B, "INGEST");
    let first_sent = Instant::now();
    let (status, body) = c.ingest(&first, &records(ORG_A, "one", 20));
    assert_eq!(status, 200, "{body}");
    let r = c.post(
        "/api/v1/ingest",
        &second,
        "",
        ndjson(&records(ORG_A, "two", 20)),
    );
    let since_first = secs_since(first_sent);
    assert_within(since_first, 10.0, "the second key's batch");
    let (body, retry_after) = refused(r);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rate limit of this org exceeded"),
        "{body}"
    );
    assert!(
        retry_after <= 10 && retry_after as f64 >= (10.0 - since_first).ceil(),
        "10 records missing at 1/s, {since_first:.1} s after the first batch: {body}"
    );
    let (status, body) = c.ingest(&other_org, &records(ORG_B, "b", 30));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn rate_limit_config_errors_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        "[limits]\ningest_burst_records_per_org = 100\ningest_records_per_second_per_key = 20000000\n",
    )
    .unwrap();
    let out = Command::new(bin("codestax-collector"))
        .arg("--check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = config.display().to_string();
    assert!(
        err.lines().any(|l| l.contains(
            "collector.limits.ingest_burst_records_per_org: has no effect while \
             limits.ingest_records_per_second_per_org is 0"
        ) && l.contains(&format!("{file}, line 2"))),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains("collector.limits.ingest_records_per_second_per_key: must be between 0 and 10000000, got 20000000")
                && l.contains(&format!("{file}, line 3"))),
        "{err}"
    );
}

#[test]
fn the_agent_waits_out_429s_and_delivers_every_record_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(
        &dir.path().join("data"),
        "[limits]\ningest_records_per_second_per_key = 100\ningest_burst_records_per_key = 100\n",
    );
    let ingest = c.create_key(ORG_A, "INGEST");
    let admin = c.create_key(ORG_A, "ORG_ADMIN");
    const N: usize = 600;
    let file = dir.path().join("emit.jsonl");
    let lines: String = records(ORG_A, "agent", N)
        .iter()
        .map(|r| r.to_string() + "\n")
        .collect();
    std::fs::write(&file, lines).unwrap();
    let agent = Agent::start(
        &dir.path().join("agent"),
        &c.grpc_endpoint(),
        &ingest,
        &AgentOptions {
            include: vec![file.display().to_string()],
            org_id: ORG_A.into(),
            // Batches larger than the burst: each waits for a full allowance, then repays.
            batch_max_records: 150,
            ..AgentOptions::default()
        },
    );
    c.wait_for_total_within(
        ORG_A,
        "action=auth.login",
        &admin,
        N as u64,
        Duration::from_secs(60),
    );
    assert!(
        c.metrics()
            .contains("codestax_collector_ingest_records_rate_limited_total{scope=\"key\"}"),
        "the collector refused some batches"
    );
    assert!(agent.metric("codestax_agent_retries") >= 1.0);
    assert!(agent.quarantine().is_empty(), "{:?}", agent.quarantine());
    // Exactly once: every id, and nothing beyond them.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(c.total(ORG_A, "action=auth.login", &admin), N as u64);
    for i in [0, N / 2, N - 1] {
        let r = c.get(&format!("/api/v1/orgs/{ORG_A}/audit-log/agent-{i}"), &admin);
        assert_eq!(r.status(), 200, "agent-{i}");
    }
}

/// `limits.request_timeout` cuts a request whose body never finishes (a slow or stuck client
/// holding a connection) with a JSON 408, and nothing of it is stored; a normal request on the
/// same collector goes through.
#[test]
fn a_request_not_finished_within_request_timeout_gets_a_json_408() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(
        &dir.path().join("data"),
        "[limits]\nrequest_timeout = \"1s\"\n",
    );
    let ingest = c.create_key(ORG_A, "INGEST");
    let body = ndjson(&records(ORG_A, "slow", 2));
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", c.http_port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = format!(
        "POST /api/v1/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ingest}\r\n\
         Content-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    // Half of the body, then nothing: the handler waits for the rest until the deadline.
    conn.write_all(&body[..body.len() / 2]).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("request_timeout\"") {
        let n = conn
            .read(&mut buf)
            .expect("an answer before the read timeout");
        assert!(n > 0, "connection closed without an answer: {answer:?}");
        answer.extend_from_slice(&buf[..n]);
    }
    let waited = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("limits.request_timeout"), "{text}");
    assert!(waited >= Duration::from_millis(900), "cut after {waited:?}");

    let (status, answer) = c.ingest(&ingest, &records(ORG_A, "fast", 1));
    assert_eq!(status, 200, "{answer}");
    let admin = c.create_key(ORG_A, "ORG_ADMIN");
    c.wait_for_total(ORG_A, "action=auth.login", &admin, 1);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        c.total(ORG_A, "action=auth.login", &admin),
        1,
        "a cut request stored records"
    );
}
