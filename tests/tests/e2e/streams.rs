//! Streams end to end, with real receivers the tests start: an HTTPS receiver (hyper over rustls,
//! certificate made by `openssl`, every batch's HMAC checked), a HEC receiver, rsyslog (imtcp,
//! octet-counted framing, writing a file) and moto's S3 server (objects read back with boto3).
//! OCSF and ECS streams' events are checked against the pinned published schemas. For each
//! receiver: every record delivered in `seq` order, nothing lost across a kill -9 of the
//! collector and across a receiver outage (10 s; `CODESTAX_STREAM_OUTAGE_SECS=60` for a minute), replay re-delivers exactly the asked range,
//! `/test` reports status and timing only, secrets appear in no answer, log or file of the data
//! directory.
//!
//! rsyslogd or moto missing: the syslog or S3 test prints SKIPPED, but fails when `CI` is set
//! (`.ci/run` installs Debian's `rsyslog` and moto in its venv).

use crate::schemas;

use codestax_harness::{
    AnswerHold, Collector, Process, free_port, now_rfc3339, record, wait_until,
};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const SECRET: &str = "stream-hmac-secret-0123456789";
pub(crate) const HEADER_SECRET: &str = "Bearer header-credential-98765";
const ORG: &str = "acme";

fn settings() -> String {
    // Loopback must be allowed: it is refused by default.
    "[streams]\nallow_destinations = [\"127.0.0.1\"]\n".to_string()
}

fn ingest_n(c: &Collector, token: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let records: Vec<Value> = chunk
            .iter()
            .map(|i| {
                let id = format!("{prefix}-{i:05}");
                ids.push(id.clone());
                record(
                    ORG,
                    &id,
                    "scan.triggered",
                    "ada@acme.example",
                    &now_rfc3339(),
                )
            })
            .collect();
        let (status, body) = c.ingest(token, &records);
        assert_eq!(status, 200, "{body}");
    }
    ids
}

pub(crate) fn request(
    c: &Collector,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, _, body) = request_with_headers(c, method, path, token, body);
    (status, body)
}

/// [`request`], with the answer's headers.
pub(crate) fn request_with_headers(
    c: &Collector,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let client = reqwest::blocking::Client::new();
    let mut r = client
        .request(method.parse().unwrap(), c.url(path))
        .bearer_auth(token);
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = r.send().expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().unwrap_or_default();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// How long each receiver stays down: 10 s by default, `CODESTAX_STREAM_OUTAGE_SECS=60` for the
/// issue's one-minute outage (a documented run, not CI's).
fn outage_length() -> Duration {
    let secs = std::env::var("CODESTAX_STREAM_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    Duration::from_secs(secs)
}
/// What a receiver got, as records (JSON values), in arrival order.
#[derive(Clone, Default)]
pub(crate) struct Received(Arc<Mutex<Vec<Value>>>);

impl Received {
    pub(crate) fn all(&self) -> Vec<Value> {
        self.0.lock().unwrap().clone()
    }

    /// The records with a `seq` (test events have none worth checking: seq 0).
    pub(crate) fn seqs(&self) -> Vec<u64> {
        self.all()
            .iter()
            .filter_map(|r| r["seq"].as_u64())
            .filter(|s| *s > 0)
            .collect()
    }

    pub(crate) fn ids(&self) -> BTreeSet<String> {
        self.all()
            .iter()
            .filter_map(|r| r["id"].as_str().map(str::to_string))
            .collect()
    }
}

/// At least once, in order: every seq from 1 to the highest arrived, and a repeat only as part
/// of a re-sent run (each arrival is the next seq, or a step back to one already seen).
pub(crate) fn assert_in_order_without_gaps(seqs: &[u64]) {
    let mut highest = 0;
    for (i, &s) in seqs.iter().enumerate() {
        assert!(
            s <= highest + 1,
            "seq {s} arrived at position {i} after {highest}: a gap"
        );
        if s == highest + 1 {
            highest = s;
        } else {
            // A re-sent run must itself be in order.
            if i > 0 && seqs[i - 1] + 1 != s {
                assert!(
                    s <= seqs[i - 1],
                    "re-sent run out of order at {i}: {} then {s}",
                    seqs[i - 1]
                );
            }
        }
    }
    let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(
        distinct.len() as u64,
        highest,
        "every seq 1..={highest} arrived"
    );
}

/// The run a replay from `from` re-delivered, among the arrivals after `mark`: records newer
/// than `newest` (written meanwhile) may come first; then exactly `from..=newest` in order.
fn assert_replayed(arrivals: &[Value], mark: usize, from: u64, newest: u64) {
    let seqs: Vec<u64> = arrivals[mark..]
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .collect();
    let start = seqs
        .iter()
        .position(|s| *s <= newest)
        .expect("the replay arrived");
    assert!(seqs[..start].iter().all(|s| *s > newest), "{seqs:?}");
    let run: Vec<u64> = seqs[start..]
        .iter()
        .copied()
        .take((newest - from + 1) as usize)
        .collect();
    assert_eq!(
        run,
        (from..=newest).collect::<Vec<_>>(),
        "replay from seq {from}"
    );
}

/// Once stream `id` has caught up, asks it to replay from seq `from` and waits for the
/// re-delivered run among `arrivals` (the receiver's records so far, in arrival order), which must
/// be exactly `from..=` the newest delivered ([`assert_replayed`]). Returns the arrivals' mark
/// before the replay and that newest seq.
fn replay_from_seq(
    c: &Collector,
    owner: &str,
    id: &str,
    from: u64,
    arrivals: impl Fn() -> Vec<Value>,
) -> (usize, u64) {
    wait_until("the stream caught up", Duration::from_secs(30), || {
        stream_status(c, owner, id)["status"]["lag_records"] == 0
    });
    let before = arrivals();
    let mark = before.len();
    let newest = before
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .max()
        .expect("records were delivered");
    let (status, body) = request(
        c,
        "POST",
        &format!("/api/v1/orgs/{ORG}/streams/{id}/replay"),
        owner,
        Some(json!({ "from": from })),
    );
    assert_eq!(status, 200, "{body}");
    wait_until("the replay arrived", Duration::from_secs(60), || {
        arrivals()[mark..]
            .iter()
            .filter(|r| r["seq"].as_u64().is_some_and(|s| s <= newest))
            .count()
            >= (newest - from + 1) as usize
    });
    assert_replayed(&arrivals(), mark, from, newest);
    (mark, newest)
}

fn wait_ids(what: &str, received: &Received, ids: &[String], timeout: Duration) {
    let started = Instant::now();
    loop {
        let got = received.ids();
        let missing: Vec<&String> = ids.iter().filter(|i| !got.contains(*i)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "{what}: {} of {} records not delivered after {timeout:?} (first: {:?})",
            missing.len(),
            ids.len(),
            missing.first()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates stream "siem" of `ORG` to `receiver`'s `/in` (HMAC secret, header, its CA), `start:
/// beginning`; returns its id.
fn https_stream_from_the_beginning(c: &Collector, owner: &str, receiver: &HttpsReceiver) -> String {
    let (status, created) = request(
        c,
        "POST",
        &format!("/api/v1/orgs/{ORG}/streams"),
        owner,
        Some(json!({
            "name": "siem", "start": "beginning",
            "destination": {"kind": "https", "url": receiver.url("/in"), "secret": SECRET,
                "headers": {"Authorization": HEADER_SECRET}, "ca_pem": receiver.cert_pem}
        })),
    );
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_string()
}

fn stream_status(c: &Collector, owner: &str, id: &str) -> Value {
    let (status, body) = request(
        c,
        "GET",
        &format!("/api/v1/orgs/{ORG}/streams/{id}"),
        owner,
        None,
    );
    assert_eq!(status, 200, "{body}");
    body
}

fn secrets_absent(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} holds the HMAC secret");
    assert!(
        !text.contains("header-credential-98765"),
        "{what} holds the header value"
    );
}

/// Every file under `dir`, as text (lossy), for the secrets check.
fn files_text(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    out
}

// ---------------------------------------------------------------- HTTPS receiver

/// An HTTPS receiver on 127.0.0.1: checks each batch's signature, keeps its records, answers
/// 200 (or 403 on `/forbidden`). Stops and starts again on the same port (an outage). The
/// dashboard's browser test streams to it too.
pub(crate) struct HttpsReceiver {
    runtime: tokio::runtime::Runtime,
    port: u16,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    pub(crate) received: Received,
    bad_signatures: Arc<Mutex<u64>>,
    batches: Arc<Mutex<u64>>,
    /// TLS connections accepted (a stream keeps one alive across batches).
    connections: Arc<Mutex<u64>>,
    server: Option<tokio::task::JoinHandle<()>>,
    pub(crate) cert_pem: String,
}

impl HttpsReceiver {
    pub(crate) fn start(dir: &Path) -> HttpsReceiver {
        let files = codestax_harness::test_certificates(dir, "IP:127.0.0.1")
            .expect("make the receiver's certificate");
        let (cert_pem, tls) = (files.ca(), files.server_config());
        let mut r = HttpsReceiver {
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
            port: free_port(),
            tls,
            received: Received::default(),
            bad_signatures: Arc::default(),
            batches: Arc::default(),
            connections: Arc::default(),
            server: None,
            cert_pem,
        };
        r.up();
        r
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn up(&mut self) {
        let listener = self
            .runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", self.port)))
            .expect("bind the receiver");
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.clone());
        let (received, bad, batches, connections) = (
            self.received.clone(),
            self.bad_signatures.clone(),
            self.batches.clone(),
            self.connections.clone(),
        );
        self.server = Some(self.runtime.spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, received, bad, batches, connections) = (
                    acceptor.clone(),
                    received.clone(),
                    bad.clone(),
                    batches.clone(),
                    connections.clone(),
                );
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    *connections.lock().unwrap() += 1;
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, received.clone(), bad.clone(), batches.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        }));
    }

    /// Stops listening and drops every connection.
    fn down(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
            let _ = self.runtime.block_on(s);
        }
    }
}

async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
    received: Received,
    bad: Arc<Mutex<u64>>,
    batches: Arc<Mutex<u64>>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let answer = |status: u16| {
        Ok(hyper::Response::builder()
            .status(status)
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"receiver body: never shown by /test",
            )))
            .unwrap())
    };
    let path = req.uri().path().to_string();
    let signature = req
        .headers()
        .get("x-codestax-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let header_ok = req
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == HEADER_SECRET.as_bytes());
    let Ok(body) = req.into_body().collect().await else {
        return answer(400);
    };
    let body = body.to_bytes();
    if path == "/forbidden" {
        return answer(403);
    }
    if !header_ok || !signature_ok(signature.as_deref(), &body) {
        *bad.lock().unwrap() += 1;
        return answer(401);
    }
    let mut got = received.0.lock().unwrap();
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        got.push(serde_json::from_slice(line).expect("each line is a JSON record"));
    }
    *batches.lock().unwrap() += 1;
    answer(200)
}

/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`, `t` within 5 minutes: what
/// docs/streams.md tells receivers to check.
fn signature_ok(header: Option<&str>, body: &[u8]) -> bool {
    let Some(header) = header else { return false };
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = hex::decode(x).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - t).abs() > 300 {
        return false;
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

#[test]
fn https_stream_delivers_in_order_through_a_kill_and_an_outage_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = HttpsReceiver::start(dir.path());
    let data = dir.path().join("collector");
    let mut c = Collector::start(&data, &settings());
    let owner = c.create_key(ORG, "ORG_OWNER");
    let admin = c.create_key(ORG, "ORG_ADMIN");
    let ingest = c.create_key(ORG, "INGEST");

    // Refused: internal addresses not in the allowlist, and bad fields, each named.
    for (url, code) in [
        ("https://169.254.169.254/latest", "destination_refused"),
        ("https://10.1.2.3/", "destination_refused"),
        ("ftp://127.0.0.1/", "invalid_parameter"),
    ] {
        let (status, body) = request(
            &c,
            "POST",
            &format!("/api/v1/orgs/{ORG}/streams"),
            &owner,
            Some(json!({
                "name": "x", "destination": {"kind": "https", "url": url}
            })),
        );
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    let (status, body) = request(
        &c,
        "POST",
        &format!("/api/v1/orgs/{ORG}/streams"),
        &admin,
        Some(json!({
            "name": "x", "destination": {"kind": "https", "url": receiver.url("/in")}
        })),
    );
    assert_eq!(status, 403, "ORG_ADMIN may not create: {body}");

    let before = ingest_n(&c, &ingest, "before", 150);
    let (status, created) = request(
        &c,
        "POST",
        &format!("/api/v1/orgs/{ORG}/streams"),
        &owner,
        Some(json!({
            "name": "siem", "format": "native", "start": "beginning",
            "destination": {"kind": "https", "url": receiver.url("/in"), "secret": SECRET,
                "headers": {"Authorization": HEADER_SECRET}, "ca_pem": receiver.cert_pem}
        })),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    secrets_absent("the create answer", &created.to_string());
    assert_eq!(created["has_secret"], true);
    assert_eq!(created["header_names"], json!(["Authorization"]));

    // A stream that the destination refuses for good: failed, with the answer as its error.
    let (status, forbidden) = request(
        &c,
        "POST",
        &format!("/api/v1/orgs/{ORG}/streams"),
        &owner,
        Some(json!({
            "name": "refused", "start": "beginning",
            "destination": {"kind": "https", "url": receiver.url("/forbidden"), "ca_pem": receiver.cert_pem}
        })),
    );
    assert_eq!(status, 201, "{forbidden}");
    let forbidden_id = forbidden["id"].as_str().unwrap().to_string();

    wait_ids(
        "the records before the stream",
        &receiver.received,
        &before,
        Duration::from_secs(60),
    );
    let during = ingest_n(&c, &ingest, "live", 200);
    wait_ids(
        "live records",
        &receiver.received,
        &during,
        Duration::from_secs(60),
    );
    // One kept-alive connection per stream (this one and the refused one), not one per batch.
    let (batches, connections) = (
        *receiver.batches.lock().unwrap(),
        *receiver.connections.lock().unwrap(),
    );
    assert!(
        batches >= 2 && connections <= 2,
        "{batches} batches over {connections} connections"
    );

    wait_until(
        "the refused stream shows failed",
        Duration::from_secs(30),
        || {
            let s = stream_status(&c, &owner, &forbidden_id);
            s["status"]["state"] == "failed"
                && s["status"]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("403"))
        },
    );

    // /test: status and timing, never the receiver's body.
    let (status, test) = request(
        &c,
        "POST",
        &format!("/api/v1/orgs/{ORG}/streams/{id}/test"),
        &owner,
        None,
    );
    assert_eq!(status, 200, "{test}");
    assert_eq!(test["accepted"], true, "{test}");
    assert_eq!(test["status"], 200, "{test}");
    assert!(test["duration_ms"].is_u64(), "{test}");
    assert!(!test.to_string().contains("receiver body"), "{test}");

    // kill -9 while records are being delivered: nothing lost after the restart.
    let burst = ingest_n(&c, &ingest, "burst", 400);
    c.kill9();
    c.restart();
    let after = ingest_n(&c, &ingest, "after-kill", 100);
    wait_ids(
        "records across a kill -9",
        &receiver.received,
        &burst,
        Duration::from_secs(90),
    );
    wait_ids(
        "records after the restart",
        &receiver.received,
        &after,
        Duration::from_secs(60),
    );

    // The receiver down for ~10 s: the stream retries, shows it, and catches up.
    receiver.down();
    let outage = ingest_n(&c, &ingest, "outage", 200);
    std::thread::sleep(outage_length());
    let s = stream_status(&c, &owner, &id);
    assert_eq!(s["status"]["state"], "retrying", "{s}");
    assert!(s["status"]["lag_records"].as_u64().unwrap() >= 200, "{s}");
    assert!(s["status"]["last_error"].is_string(), "{s}");
    receiver.up();
    wait_ids(
        "records after the outage",
        &receiver.received,
        &outage,
        Duration::from_secs(90),
    );
    assert_in_order_without_gaps(&receiver.received.seqs());

    // Replay from a seq: the re-delivered run is exactly seq 20 to the newest delivered.
    let (mark, newest) = replay_from_seq(&c, &owner, &id, 20, || receiver.received.all());
    // The first replay done (a batch sent again after a lost answer counts twice above): its last
    // batches must not arrive after the next replay's mark.
    wait_until(
        "the first replay delivered",
        Duration::from_secs(60),
        || {
            let seen: std::collections::BTreeSet<u64> = receiver.received.all()[mark..]
                .iter()
                .filter_map(|r| r["seq"].as_u64())
                .filter(|s| (20..=newest).contains(s))
                .collect();
            seen.len() as u64 == newest - 19
                && stream_status(&c, &owner, &id)["status"]["lag_records"] == 0
        },
    );

    // Replay from a time: from the first record received at or after it.
    let all = receiver.received.all();
    let by_seq: std::collections::BTreeMap<u64, String> = all
        .iter()
        .filter_map(|r| Some((r["seq"].as_u64()?, r["received_at"].as_str()?.to_string())))
        .collect();
    let (k, t) = by_seq
        .iter()
        .skip(50)
        .find(|(s, t)| by_seq.get(&(**s - 1)).is_some_and(|prev| prev < *t))
        .map(|(s, t)| (*s, t.clone()))
        .expect("a record received after the one before it");
    let mark = receiver.received.all().len();
    let (status, body) = request(
        &c,
        "POST",
        &format!("/api/v1/orgs/{ORG}/streams/{id}/replay"),
        &owner,
        Some(json!({"from": t})),
    );
    assert_eq!(status, 200, "{body}");
    let newest = receiver.received.seqs().into_iter().max().unwrap();
    wait_until("the time replay arrived", Duration::from_secs(60), || {
        receiver.received.all()[mark..]
            .iter()
            .any(|r| r["seq"].as_u64().is_some_and(|s| s <= newest))
    });
    let first = receiver.received.all()[mark..]
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .find(|s| *s <= newest);
    assert_eq!(first, Some(k), "replay from {t} starts at seq {k}");

    // Pause and resume.
    let (status, body) = request(
        &c,
        "PATCH",
        &format!("/api/v1/orgs/{ORG}/streams/{id}"),
        &owner,
        Some(json!({"paused": true})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"]["state"], "paused", "{body}");
    let (status, body) = request(
        &c,
        "POST",
        &format!("/api/v1/orgs/{ORG}/streams/{id}/resume"),
        &owner,
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["status"]["state"], "paused", "{body}");

    // ORG_ADMIN reads; nobody reads a secret.
    let (status, list) = request(
        &c,
        "GET",
        &format!("/api/v1/orgs/{ORG}/streams"),
        &admin,
        None,
    );
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["streams"].as_array().unwrap().len(), 2, "{list}");
    secrets_absent("the list", &list.to_string());
    secrets_absent("the data directory", &files_text(&data));
    secrets_absent("the collector's log", &c.stderr());

    // The changes are in the org's log, written by the collector.
    let entries = c.search_all(ORG, "category=audit_log", &owner);
    let actions: BTreeSet<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for a in ["audit_log.stream_created", "audit_log.stream_changed"] {
        assert!(actions.contains(a), "{a} in {actions:?}");
    }
    assert_eq!(
        *receiver.bad_signatures.lock().unwrap(),
        0,
        "every batch was signed"
    );

    // Delete: gone, and a deleted stream sends no more.
    let (status, _) = request(
        &c,
        "DELETE",
        &format!("/api/v1/orgs/{ORG}/streams/{forbidden_id}"),
        &owner,
        None,
    );
    assert_eq!(status, 204);
    let (status, _) = request(
        &c,
        "GET",
        &format!("/api/v1/orgs/{ORG}/streams/{forbidden_id}"),
        &owner,
        None,
    );
    assert_eq!(status, 404);
    let metrics = c.metrics();
    assert!(
        metrics.contains("codestax_collector_streams{state=\"healthy\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains(ORG), "no org in the metrics by default");
    assert!(c.stop());
}

/// A caught-up stream writes its cursor within about a second of its last delivery (not once a
/// commit), and a stream that stops (a pause here) writes it at once: a crash re-delivers at most
/// a second of records, a pause or a restart none.
#[test]
fn a_streams_cursor_is_written_within_a_second_of_delivery_and_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = HttpsReceiver::start(dir.path());
    let data = dir.path().join("collector");
    let mut c = Collector::start(&data, &settings());
    let owner = c.create_key(ORG, "ORG_OWNER");
    let ingest = c.create_key(ORG, "INGEST");
    let id = https_stream_from_the_beginning(&c, &owner, &receiver);
    let file = data
        .join("streams/cursors")
        .join(ORG)
        .join(format!("{id}.json"));
    let written = || -> u64 {
        let text = std::fs::read_to_string(&file).unwrap();
        let cursor: Value = serde_json::from_str(&text).unwrap();
        cursor["delivered_seq"].as_u64().unwrap()
    };
    let delivered = |highest: u64| {
        wait_until(
            "the status shows the delivery",
            Duration::from_secs(30),
            || stream_status(&c, &owner, &id)["status"]["delivered_seq"] == highest,
        );
    };

    // Delivered, then paused at once: the pause's answer comes after the cursor is written.
    let ids = ingest_n(&c, &ingest, "a", 50);
    wait_ids(
        "the first records",
        &receiver.received,
        &ids,
        Duration::from_secs(60),
    );
    let highest = receiver.received.seqs().into_iter().max().unwrap();
    delivered(highest);
    let (status, body) = request(
        &c,
        "PATCH",
        &format!("/api/v1/orgs/{ORG}/streams/{id}"),
        &owner,
        Some(json!({"paused": true})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(written(), highest, "the paused stream's cursor");

    // Resumed and caught up: the cursor is written within about a second, with nothing more to
    // deliver.
    let (status, body) = request(
        &c,
        "POST",
        &format!("/api/v1/orgs/{ORG}/streams/{id}/resume"),
        &owner,
        None,
    );
    assert_eq!(status, 200, "{body}");
    let ids = ingest_n(&c, &ingest, "b", 50);
    wait_ids(
        "the next records",
        &receiver.received,
        &ids,
        Duration::from_secs(60),
    );
    let highest = receiver.received.seqs().into_iter().max().unwrap();
    delivered(highest);
    wait_until(
        "the caught-up stream's cursor written",
        Duration::from_secs(5),
        || written() == highest,
    );

    // Killed and started again: everything delivered, in order, repeats allowed.
    c.kill9();
    c.restart();
    let ids = ingest_n(&c, &ingest, "c", 50);
    wait_ids(
        "records after the restart",
        &receiver.received,
        &ids,
        Duration::from_secs(60),
    );
    assert_in_order_without_gaps(&receiver.received.seqs());
    assert!(c.stop());
}

#[test]
fn declared_streams_are_read_only_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    let port = free_port();
    let c = Collector::start(
        &data,
        &format!(
            "{}\n[[streams.declared]]\norg = \"{ORG}\"\nid = \"ops-siem\"\nname = \"ops\"\n\
             [streams.declared.destination]\nkind = \"syslog\"\naddress = \"127.0.0.1:{port}\"\n",
            settings()
        ),
    );
    let owner = c.create_key(ORG, "ORG_OWNER");
    let s = stream_status(&c, &owner, "ops-siem");
    assert_eq!(s["declared"], true, "{s}");
    for (method, path, body) in [
        ("PATCH", "ops-siem", Some(json!({"name": "x"}))),
        ("DELETE", "ops-siem", None),
    ] {
        let (status, answer) = request(
            &c,
            method,
            &format!("/api/v1/orgs/{ORG}/streams/{path}"),
            &owner,
            body,
        );
        assert_eq!(status, 409, "{method}: {answer}");
        assert_eq!(answer["error"]["code"], "stream_declared", "{answer}");
    }
    // Nothing listens there: the stream retries and says so.
    let ingest = c.create_key(ORG, "INGEST");
    let (status, body) = c.ingest(
        &ingest,
        &[record(
            ORG,
            "d-1",
            "scan.triggered",
            "a@b.c",
            &now_rfc3339(),
        )],
    );
    assert_eq!(status, 200, "{body}");
    wait_until(
        "the declared stream retries",
        Duration::from_secs(30),
        || stream_status(&c, &owner, "ops-siem")["status"]["state"] == "retrying",
    );
}

/// Records retention deletes before a (paused) stream delivers them are counted and written to
/// the org's log, and the stream goes on with the next record.
#[test]
fn records_expired_before_delivery_are_counted_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = HttpsReceiver::start(dir.path());
    let data = dir.path().join("collector");
    let c = Collector::start(
        &data,
        &format!(
            "{}[retention]\ndefault_days = 3\njanitor_interval = \"1s\"\n",
            settings()
        ),
    );
    let owner = c.create_key(ORG, "ORG_OWNER");
    let ingest = c.create_key(ORG, "INGEST");
    let id = https_stream_from_the_beginning(&c, &owner, &receiver);
    let (status, body) = request(
        &c,
        "POST",
        &format!("/api/v1/orgs/{ORG}/streams/{id}/pause"),
        &owner,
        None,
    );
    assert_eq!(status, 200, "{body}");

    // One record 8 s inside the 3-day window (ingest refuses one already past it), so it expires
    // while the stream is paused; one recent.
    let old = (chrono::Utc::now() - chrono::Duration::days(3) + chrono::Duration::seconds(8))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (status, body) = c.ingest(
        &ingest,
        &[
            record(ORG, "old-1", "scan.triggered", "ada@acme.example", &old),
            record(
                ORG,
                "new-1",
                "scan.triggered",
                "ada@acme.example",
                &now_rfc3339(),
            ),
        ],
    );
    assert_eq!(status, 200, "{body}");
    // Deleted, not only hidden by the retention floor (which reads apply at once).
    wait_until(
        "the janitor deleted the old record",
        Duration::from_secs(60),
        || {
            c.metrics().lines().any(|l| {
                l.starts_with("codestax_collector_retention_records_deleted_total ")
                    && l.ends_with(" 1")
            })
        },
    );

    let (status, body) = request(
        &c,
        "POST",
        &format!("/api/v1/orgs/{ORG}/streams/{id}/resume"),
        &owner,
        None,
    );
    assert_eq!(status, 200, "{body}");
    wait_ids(
        "the recent record",
        &receiver.received,
        &["new-1".to_string()],
        Duration::from_secs(60),
    );
    assert!(!receiver.received.ids().contains("old-1"));
    let s = stream_status(&c, &owner, &id);
    assert_eq!(s["status"]["expired_records"], 1, "{s}");
    let mut entries = Vec::new();
    let found = codestax_harness::wait_for(Duration::from_secs(30), || {
        entries = c.search_all(ORG, "action=audit_log.stream_records_expired", &owner);
        !entries.is_empty()
    });
    assert!(found, "no expired entry; collector log: {}", c.stderr());
    let expired: Vec<&Value> = entries.iter().collect();
    assert_eq!(expired.len(), 1, "{entries:?}");
    assert_eq!(expired[0]["metadata"]["records"], 1, "{}", expired[0]);
    assert_eq!(
        expired[0]["metadata"]["stream_id"],
        id.as_str(),
        "{}",
        expired[0]
    );
    assert_eq!(
        expired[0]["provenance"]["writer"], "collector",
        "{}",
        expired[0]
    );
}

// ---------------------------------------------------------------- rsyslog

struct Rsyslog {
    process: Process,
    conf: PathBuf,
    out: PathBuf,
    port: u16,
}

impl Rsyslog {
    fn start(dir: &Path) -> Option<Rsyslog> {
        Rsyslog::start_with(dir, None)
    }

    /// rsyslogd whose imtcp takes only TLS (the gtls network stream driver of Debian's
    /// `rsyslog-gnutls`), presenting `certs`' server certificate. `None` when rsyslogd is
    /// missing; a panic when only the driver is (it would otherwise fail as a silent refusal).
    fn start_tls(dir: &Path, certs: &codestax_harness::TestCertificates) -> Option<Rsyslog> {
        Rsyslog::start_with(dir, Some(certs))
    }

    fn start_with(dir: &Path, tls: Option<&codestax_harness::TestCertificates>) -> Option<Rsyslog> {
        let bin = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let (global_tls, imtcp_tls) = match tls {
            None => (String::new(), String::new()),
            Some(certs) => {
                let driver = [
                    "/usr/lib/x86_64-linux-gnu",
                    "/usr/lib/aarch64-linux-gnu",
                    "/usr/lib",
                ]
                .iter()
                .map(|d| Path::new(d).join("rsyslog/lmnsd_gtls.so"))
                .find(|p| p.exists());
                assert!(
                    driver.is_some(),
                    "rsyslog's gtls driver (lmnsd_gtls.so) is missing: install Debian's \
                     rsyslog-gnutls (.ci/run does); the syslog TLS test cannot run without it"
                );
                (
                    format!(
                        " DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"{}\" \
                         DefaultNetstreamDriverCertFile=\"{}\" DefaultNetstreamDriverKeyFile=\"{}\"",
                        certs.ca_pem.display(),
                        certs.cert_pem.display(),
                        certs.key_pem.display()
                    ),
                    " StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\""
                        .to_string(),
                )
            }
        };
        let port = free_port();
        let work = dir.join("rsyslog-work");
        std::fs::create_dir_all(&work).unwrap();
        let out = dir.join("received.log");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{work}\" maxMessageSize=\"64k\"{global_tls})\n\
                 module(load=\"imtcp\"{imtcp_tls})\n\
                 template(name=\"raw\" type=\"string\" string=\"%msg%\\n\")\n\
                 ruleset(name=\"streams\") {{ action(type=\"omfile\" file=\"{out}\" template=\"raw\" flushOnTXEnd=\"on\" asyncWriting=\"off\") }}\n\
                 input(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\" ruleset=\"streams\")\n",
                work = work.display(),
                out = out.display(),
            ),
        )
        .unwrap();
        let mut r = Rsyslog {
            process: Process::none("rsyslogd"),
            conf,
            out,
            port,
        };
        r.process = r.spawn(bin);
        Some(r)
    }

    fn spawn(&self, bin: &str) -> Process {
        let pid = self.conf.with_extension("pid");
        let _ = std::fs::remove_file(&pid);
        let p = Process::spawn(
            "rsyslogd",
            Command::new(bin)
                .arg("-n")
                .arg("-f")
                .arg(&self.conf)
                .arg("-i")
                .arg(&pid),
        )
        .expect("start rsyslogd");
        wait_until("rsyslogd listens", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
        p
    }

    fn stop(&mut self) {
        self.process
            .terminate(Duration::from_secs(20))
            .expect("stop rsyslogd");
    }

    fn restart(&mut self) {
        let bin = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap();
        self.process = self.spawn(bin);
    }

    /// The records in the file, in order.
    fn received(&self) -> Received {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let records = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        Received(Arc::new(Mutex::new(records)))
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.process.kill9();
    }
}

fn wait_syslog(what: &str, r: &Rsyslog, ids: &[String], timeout: Duration) {
    let started = Instant::now();
    loop {
        let got = r.received().ids();
        let missing = ids.iter().filter(|i| !got.contains(*i)).count();
        if missing == 0 {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "{what}: {missing} of {} not in rsyslog's file after {timeout:?}",
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `started`, or `None` after saying loudly that the test did not run (rsyslogd absent here);
/// under CI, where `.ci/run` installs `packages`, its absence fails the test.
fn rsyslog_or_skip(started: Option<Rsyslog>, packages: &str) -> Option<Rsyslog> {
    if started.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "rsyslogd is not installed; CI must install Debian's {packages} (.ci/run)"
        );
        eprintln!(
            "SKIPPED: rsyslogd not found (apt-get install {packages}); a syslog test did not run"
        );
    }
    started
}

#[test]
fn syslog_stream_to_rsyslog_delivers_in_order_through_a_kill_and_an_outage_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut rsyslog) = rsyslog_or_skip(Rsyslog::start(dir.path()), "rsyslog") else {
        return;
    };
    let data = dir.path().join("collector");
    let mut c = Collector::start(&data, &settings());
    let owner = c.create_key(ORG, "ORG_OWNER");
    let ingest = c.create_key(ORG, "INGEST");
    let before = ingest_n(&c, &ingest, "before", 100);
    let (status, created) = request(
        &c,
        "POST",
        &format!("/api/v1/orgs/{ORG}/streams"),
        &owner,
        Some(json!({
            "name": "rsyslog", "start": "beginning",
            "destination": {"kind": "syslog", "address": format!("127.0.0.1:{}", rsyslog.port), "tls": false}
        })),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    wait_syslog(
        "records before the stream",
        &rsyslog,
        &before,
        Duration::from_secs(60),
    );

    // One record longer than the 8 KiB default: sent as a counted stub, never cut.
    let mut big = record(
        ORG,
        "big-1",
        "scan.triggered",
        "ada@acme.example",
        &now_rfc3339(),
    );
    big["metadata"]["pad"] = json!("x".repeat(12_000));
    let (status, body) = c.ingest(&ingest, &[big]);
    assert_eq!(status, 200, "{body}");
    wait_syslog(
        "the long record's stub",
        &rsyslog,
        &["big-1".to_string()],
        Duration::from_secs(60),
    );
    let stub = rsyslog
        .received()
        .all()
        .into_iter()
        .find(|r| r["id"] == "big-1")
        .unwrap();
    assert_eq!(stub["truncated"], true, "{stub}");
    assert!(stub["original_bytes"].as_u64().unwrap() > 12_000, "{stub}");
    wait_until("the stub is counted", Duration::from_secs(10), || {
        stream_status(&c, &owner, &id)["status"]["truncated_records"] == 1
    });

    // kill -9 of the collector.
    let burst = ingest_n(&c, &ingest, "burst", 300);
    c.kill9();
    c.restart();
    let after = ingest_n(&c, &ingest, "after-kill", 100);
    wait_syslog(
        "records across a kill -9",
        &rsyslog,
        &burst,
        Duration::from_secs(90),
    );
    wait_syslog(
        "records after the restart",
        &rsyslog,
        &after,
        Duration::from_secs(60),
    );

    // rsyslog down for ~10 s.
    rsyslog.stop();
    let outage = ingest_n(&c, &ingest, "outage", 200);
    std::thread::sleep(outage_length());
    let s = stream_status(&c, &owner, &id);
    assert_eq!(s["status"]["state"], "retrying", "{s}");
    rsyslog.restart();
    wait_syslog(
        "records after the outage",
        &rsyslog,
        &outage,
        Duration::from_secs(90),
    );
    assert_in_order_without_gaps(&rsyslog.received().seqs());

    // Replay from seq 10.
    replay_from_seq(&c, &owner, &id, 10, || rsyslog.received().all());

    // /test on syslog: accepted, with timing.
    let (status, test) = request(
        &c,
        "POST",
        &format!("/api/v1/orgs/{ORG}/streams/{id}/test"),
        &owner,
        None,
    );
    assert_eq!(status, 200, "{test}");
    assert_eq!(test["accepted"], true, "{test}");
    assert!(test["duration_ms"].is_u64(), "{test}");
    assert!(c.stop());
}

/// `tls: true` against rsyslog taking only TLS (imtcp with the gtls driver, the harness's test
/// certificate): a stream that does not trust the certificate's CA is `failed` with the
/// certificate's error and delivers nothing; one given the CA delivers every record, in order.
#[test]
fn syslog_stream_over_tls_to_rsyslog_delivers_every_record_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    std::fs::create_dir_all(&certs_dir).unwrap();
    let certs = codestax_harness::test_certificates(&certs_dir, "IP:127.0.0.1")
        .expect("make rsyslog's certificate");
    let Some(rsyslog) = rsyslog_or_skip(
        Rsyslog::start_tls(dir.path(), &certs),
        "rsyslog rsyslog-gnutls",
    ) else {
        return;
    };
    let data = dir.path().join("collector");
    let mut c = Collector::start(&data, &settings());
    let owner = c.create_key(ORG, "ORG_OWNER");
    let ingest = c.create_key(ORG, "INGEST");
    let before = ingest_n(&c, &ingest, "before", 100);
    let address = format!("127.0.0.1:{}", rsyslog.port);

    // Without the CA: the certificate is not trusted, the stream is failed and sends nothing.
    let (status, created) = request(
        &c,
        "POST",
        &format!("/api/v1/orgs/{ORG}/streams"),
        &owner,
        Some(json!({
            "name": "untrusted", "start": "beginning",
            "destination": {"kind": "syslog", "address": address, "tls": true}
        })),
    );
    assert_eq!(status, 201, "{created}");
    let untrusted = created["id"].as_str().unwrap().to_string();
    wait_until(
        "the untrusted stream fails on the certificate",
        Duration::from_secs(30),
        || {
            let s = stream_status(&c, &owner, &untrusted)["status"].clone();
            s["state"] == "failed"
                && s["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("certificate"))
        },
    );
    assert!(
        rsyslog.received().all().is_empty(),
        "an untrusted TLS stream delivered"
    );
    let (status, body) = request(
        &c,
        "DELETE",
        &format!("/api/v1/orgs/{ORG}/streams/{untrusted}"),
        &owner,
        None,
    );
    assert_eq!(status, 204, "{body}");

    // With the CA: every record, before and after the stream was made, in order.
    let (status, created) = request(
        &c,
        "POST",
        &format!("/api/v1/orgs/{ORG}/streams"),
        &owner,
        Some(json!({
            "name": "rsyslog-tls", "start": "beginning",
            "destination": {"kind": "syslog", "address": address, "tls": true, "ca_pem": certs.ca()}
        })),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let after = ingest_n(&c, &ingest, "after", 300);
    wait_syslog(
        "records over TLS",
        &rsyslog,
        &[before, after].concat(),
        Duration::from_secs(90),
    );
    let seqs = rsyslog.received().seqs();
    assert_in_order_without_gaps(&seqs);
    // From the beginning: the 400 ingested (checked above by id) and the collector's own
    // entries (keys, streams), each seq from 1 up at least once.
    let distinct = seqs.iter().collect::<BTreeSet<_>>().len() as u64;
    assert_eq!(Some(distinct), seqs.iter().max().copied(), "a seq missing");
    assert!(distinct >= 400, "{distinct} records delivered");
    wait_until("the TLS stream caught up", Duration::from_secs(30), || {
        let s = stream_status(&c, &owner, &id)["status"].clone();
        s["state"] == "healthy" && s["lag_records"] == 0
    });
    assert!(c.stop());
}

// ---------------------------------------------------------------- Splunk HEC receiver

const HEC_TOKEN: &str = "hec-token-5f0c2a7e-1111-4a4a-9b9b-0123456789ab";

/// A HEC-speaking receiver on 127.0.0.1 (plain HTTP): `POST /services/collector/event` with
/// `Authorization: Splunk <HEC_TOKEN>`, a body of concatenated event objects; answers
/// `{"text":"Success","code":0}`, 401 code 4 for another token, or 503 code 9 while `busy`.
/// Stops and starts again on the same port (an outage).
struct HecReceiver {
    runtime: tokio::runtime::Runtime,
    port: u16,
    /// The events' `event` fields (the records), in arrival order.
    received: Received,
    /// The whole HEC events, in arrival order.
    events: Arc<Mutex<Vec<Value>>>,
    bad_tokens: Arc<Mutex<u64>>,
    busy: Arc<std::sync::atomic::AtomicBool>,
    server: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Clone)]
struct HecState {
    received: Received,
    events: Arc<Mutex<Vec<Value>>>,
    bad_tokens: Arc<Mutex<u64>>,
    busy: Arc<std::sync::atomic::AtomicBool>,
}

impl HecReceiver {
    fn start() -> HecReceiver {
        let mut r = HecReceiver {
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
            port: free_port(),
            received: Received::default(),
            events: Arc::default(),
            bad_tokens: Arc::default(),
            busy: Arc::default(),
            server: None,
        };
        r.up();
        r
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn up(&mut self) {
        let listener = self
            .runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", self.port)))
            .expect("bind the receiver");
        let state = HecState {
            received: self.received.clone(),
            events: self.events.clone(),
            bad_tokens: self.bad_tokens.clone(),
            busy: self.busy.clone(),
        };
        self.server = Some(self.runtime.spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                conns.spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| hec_handle(req, state.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        }));
    }

    fn down(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
            let _ = self.runtime.block_on(s);
        }
    }
}

async fn hec_handle(
    req: hyper::Request<hyper::body::Incoming>,
    state: HecState,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let answer = |status: u16, text: &str, code: u16| {
        Ok(hyper::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                json!({"text": text, "code": code}).to_string(),
            )))
            .unwrap())
    };
    let path = req.uri().path().to_string();
    let authorization = req
        .headers()
        .get("authorization")
        .map(|v| v.as_bytes().to_vec());
    let Ok(body) = req.into_body().collect().await else {
        return answer(400, "Invalid data format", 6);
    };
    let body = body.to_bytes();
    if path != "/services/collector/event" {
        return answer(404, "The requested URL was not found on this server.", 404);
    }
    if authorization.as_deref() != Some(format!("Splunk {HEC_TOKEN}").as_bytes()) {
        *state.bad_tokens.lock().unwrap() += 1;
        return answer(401, "Invalid token", 4);
    }
    if state.busy.load(std::sync::atomic::Ordering::SeqCst) {
        return answer(503, "Server is busy", 9);
    }
    // Concatenated JSON objects, as Splunk reads them.
    let mut events = Vec::new();
    for e in serde_json::Deserializer::from_slice(&body).into_iter::<Value>() {
        match e {
            Ok(e) if e["event"].is_object() => events.push(e),
            _ => return answer(400, "Invalid data format", 6),
        }
    }
    if events.is_empty() {
        return answer(400, "No data", 5);
    }
    let mut records = state.received.0.lock().unwrap();
    let mut all = state.events.lock().unwrap();
    for e in events {
        records.push(e["event"].clone());
        all.push(e);
    }
    answer(200, "Success", 0)
}

#[test]
fn splunk_hec_stream_delivers_in_order_through_a_kill_busy_and_an_outage_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = HecReceiver::start();
    let data = dir.path().join("collector");
    let mut c = Collector::start(&data, &settings());
    let owner = c.create_key(ORG, "ORG_OWNER");
    let ingest = c.create_key(ORG, "INGEST");
    let streams = format!("/api/v1/orgs/{ORG}/streams");

    // A missing token is named.
    let (status, body) = request(
        &c,
        "POST",
        &streams,
        &owner,
        Some(json!({"name": "x", "destination": {"kind": "splunk_hec", "url": receiver.url()}})),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "destination.token", "{body}");

    let before = ingest_n(&c, &ingest, "hec-before", 150);
    let (status, created) = request(
        &c,
        "POST",
        &streams,
        &owner,
        Some(json!({
            "name": "splunk", "start": "beginning",
            "destination": {"kind": "splunk_hec", "url": receiver.url(), "token": HEC_TOKEN,
                "index": "audit", "sourcetype": "codestax:test"}
        })),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["has_secret"], true, "{created}");
    assert_eq!(created["destination"]["index"], "audit", "{created}");
    assert!(!created.to_string().contains(HEC_TOKEN), "{created}");

    // A bad token: failed, with the answer as its error; nothing delivered by it.
    let (status, refused) = request(
        &c,
        "POST",
        &streams,
        &owner,
        Some(json!({
            "name": "bad-token", "start": "beginning",
            "destination": {"kind": "splunk_hec", "url": receiver.url(), "token": "wrong-token"}
        })),
    );
    assert_eq!(status, 201, "{refused}");
    let refused_id = refused["id"].as_str().unwrap().to_string();

    wait_ids(
        "the records before the stream",
        &receiver.received,
        &before,
        Duration::from_secs(60),
    );
    wait_until(
        "the bad token shows failed",
        Duration::from_secs(30),
        || {
            let s = stream_status(&c, &owner, &refused_id);
            s["status"]["state"] == "failed"
                && s["status"]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("401") && e.contains("code 4"))
        },
    );

    // /test: Splunk's status, accepted.
    let (status, test) = request(&c, "POST", &format!("{streams}/{id}/test"), &owner, None);
    assert_eq!(status, 200, "{test}");
    assert_eq!(test["accepted"], true, "{test}");
    assert_eq!(test["status"], 200, "{test}");

    // Server busy (503, code 9): retried, nothing lost.
    receiver
        .busy
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let busy = ingest_n(&c, &ingest, "hec-busy", 100);
    wait_until("the stream shows retrying", Duration::from_secs(30), || {
        let s = stream_status(&c, &owner, &id);
        s["status"]["state"] == "retrying"
            && s["status"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("503"))
    });
    receiver
        .busy
        .store(false, std::sync::atomic::Ordering::SeqCst);
    wait_ids(
        "records after busy",
        &receiver.received,
        &busy,
        Duration::from_secs(90),
    );

    // kill -9 while records are being delivered.
    let burst = ingest_n(&c, &ingest, "hec-burst", 400);
    c.kill9();
    c.restart();
    let after = ingest_n(&c, &ingest, "hec-after-kill", 100);
    wait_ids(
        "records across a kill -9",
        &receiver.received,
        &burst,
        Duration::from_secs(90),
    );
    wait_ids(
        "records after the restart",
        &receiver.received,
        &after,
        Duration::from_secs(60),
    );

    // The receiver down for ~10 s.
    receiver.down();
    let outage = ingest_n(&c, &ingest, "hec-outage", 200);
    std::thread::sleep(outage_length());
    let s = stream_status(&c, &owner, &id);
    assert_eq!(s["status"]["state"], "retrying", "{s}");
    assert!(s["status"]["lag_records"].as_u64().unwrap() >= 200, "{s}");
    receiver.up();
    wait_ids(
        "records after the outage",
        &receiver.received,
        &outage,
        Duration::from_secs(90),
    );
    assert_in_order_without_gaps(&receiver.received.seqs());

    // Replay from seq 15: exactly that range again, in order.
    replay_from_seq(&c, &owner, &id, 15, || receiver.received.all());

    // Every event as documented: time in epoch seconds (the record's time), index, sourcetype.
    for e in receiver.events.lock().unwrap().iter() {
        assert_eq!(e["index"], "audit", "{e}");
        assert_eq!(e["sourcetype"], "codestax:test", "{e}");
        assert_eq!(e["source"], format!("codestax:{ORG}"), "{e}");
        assert!(e["host"].is_string(), "{e}");
        let t = chrono::DateTime::parse_from_rfc3339(e["event"]["time"].as_str().unwrap())
            .unwrap()
            .timestamp_micros() as f64
            / 1e6;
        assert!((e["time"].as_f64().unwrap() - t).abs() < 1e-3, "{e}");
    }
    assert!(
        *receiver.bad_tokens.lock().unwrap() > 0,
        "the bad token was sent"
    );

    // The token appears in no answer, file or log line.
    let (_, list) = request(&c, "GET", &streams, &owner, None);
    for (what, text) in [
        ("the list", list.to_string()),
        ("the data directory", files_text(&data)),
        ("the collector's log", c.stderr()),
    ] {
        assert!(!text.contains(HEC_TOKEN), "{what} holds the HEC token");
    }
    assert!(c.stop());
}

// ---------------------------------------------------------------- formats

/// OCSF and ECS streams: each record of the org arrives as the format's event (one per
/// catalogue action here), valid against the pinned published schema, naming the record
/// (`metadata.uid` / `event.id`), the org and this collector.
#[test]
fn ocsf_and_ecs_streams_deliver_schema_valid_events() {
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let ocsf_receiver = HttpsReceiver::start(&tls_dir("ocsf-tls"));
    let ecs_receiver = HttpsReceiver::start(&tls_dir("ecs-tls"));
    let data = dir.path().join("collector");
    let mut c = Collector::start(&data, &settings());
    let owner = c.create_key(ORG, "ORG_OWNER");
    let ingest = c.create_key(ORG, "INGEST");

    // Every catalogue action an app may write: once with the fixture's repository target, once
    // bare (no target, failed).
    let mut records = Vec::new();
    for (i, a) in codestax_common::CATALOG
        .iter()
        .filter(|a| !a.name.starts_with("audit_log."))
        .enumerate()
    {
        let mut r = record(
            ORG,
            &format!("fmt-{i}"),
            a.name,
            "ada@acme.example",
            &now_rfc3339(),
        );
        r["metadata"]["user_agent"] = json!("Mozilla/5.0");
        let mut bare = r.clone();
        bare["id"] = json!(format!("fmt-{i}-bare"));
        bare.as_object_mut().unwrap().remove("target");
        bare["outcome"] = json!("failure");
        if !a.name.starts_with("team.") && !a.name.starts_with("scan.") {
            records.push(r);
        }
        records.push(bare);
    }
    let ids: Vec<String> = records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    for chunk in records.chunks(100) {
        let (status, body) = c.ingest(&ingest, chunk);
        assert_eq!(status, 200, "{body}");
    }

    for (format, receiver) in [("ocsf", &ocsf_receiver), ("ecs", &ecs_receiver)] {
        let (status, created) = request(
            &c,
            "POST",
            &format!("/api/v1/orgs/{ORG}/streams"),
            &owner,
            Some(json!({
                "name": format, "format": format, "start": "beginning",
                "destination": {"kind": "https", "url": receiver.url("/in"), "secret": SECRET,
                    "headers": {"Authorization": HEADER_SECRET}, "ca_pem": receiver.cert_pem}
            })),
        );
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["format"], format, "{created}");
    }

    let ocsf = schemas::Ocsf::load();
    let ecs = schemas::Ecs::load();
    let version = env!("CARGO_PKG_VERSION");
    let wait_events = |receiver: &HttpsReceiver, id_of: fn(&Value) -> Option<&str>| {
        let started = Instant::now();
        loop {
            let events = receiver.received.all();
            let got: BTreeSet<&str> = events.iter().filter_map(id_of).collect();
            if ids.iter().all(|i| got.contains(i.as_str())) {
                return events;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{} of {} events arrived",
                got.len(),
                ids.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // The org's own entries (the streams' creation) come too: every event is checked.
    let events = wait_events(&ocsf_receiver, |e| e["metadata"]["uid"].as_str());
    for e in &events {
        let errors = ocsf.validate(e);
        assert!(errors.is_empty(), "OCSF {}: {errors:?}\n{e}", ocsf.version);
        assert!(
            e["class_uid"].as_u64().is_some() && e["activity_id"].is_u64(),
            "{e}"
        );
        assert_eq!(e["metadata"]["tenant_uid"], ORG, "{e}");
        assert_eq!(e["metadata"]["product"]["version"], version, "{e}");
        assert!(e["metadata"]["reporter"]["hostname"].is_string(), "{e}");
        assert!(e["unmapped"]["seq"].as_u64().unwrap() > 0, "{e}");
    }
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["unmapped"]["seq"].as_u64().unwrap())
        .collect();
    assert_in_order_without_gaps(&seqs);

    let docs = wait_events(&ecs_receiver, |d| d["event"]["id"].as_str());
    for d in &docs {
        let errors = ecs.validate(d);
        assert!(errors.is_empty(), "ECS {}: {errors:?}\n{d}", ecs.version);
        assert_eq!(d["organization"]["id"], ORG, "{d}");
        assert_eq!(d["observer"]["version"], version, "{d}");
        assert!(d["observer"]["hostname"].is_string(), "{d}");
    }
    let seqs: Vec<u64> = docs
        .iter()
        .map(|d| d["event"]["sequence"].as_u64().unwrap())
        .collect();
    assert_in_order_without_gaps(&seqs);
    assert!(c.stop());
}

// ---------------------------------------------------------------- S3 (moto)

const S3_KEY_ID: &str = "AKIDSTREAMTEST0001";
const S3_SECRET: &str = "s3-secret-access-key-0123456789abcdef";
const S3_PREFIX: &str = "codestax/siem";

/// Reads back (or deletes) the objects under a prefix with boto3, moto's own client: nothing
/// of the collector's S3 code is used to check what it wrote.
const S3_READER: &str = r#"
import boto3, gzip, json, sys
endpoint, bucket, prefix, action = sys.argv[1:5]
import os
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=os.environ.get("S3_READER_KEY_ID", "testing"),
                  aws_secret_access_key=os.environ.get("S3_READER_SECRET", "testing"))
out = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
    for o in page.get("Contents", []):
        if action == "delete":
            s3.delete_object(Bucket=bucket, Key=o["Key"])
            continue
        got = s3.get_object(Bucket=bucket, Key=o["Key"])
        text = gzip.decompress(got["Body"].read()).decode()
        out.append({"key": o["Key"], "content_type": got.get("ContentType"),
                    "records": [json.loads(l) for l in text.split("\n") if l]})
json.dump(out, sys.stdout)
"#;

/// One object read back: its key and records.
struct S3Object {
    key: String,
    records: Vec<Value>,
}

fn s3_script(moto: &codestax_harness::MotoS3, dir: &Path, prefix: &str, action: &str) -> Value {
    s3_script_as(moto, None, dir, prefix, action)
}

/// [`s3_script`] signed with `creds` (an IAM user's key moto checks once its auth is on).
fn s3_script_as(
    moto: &codestax_harness::MotoS3,
    creds: Option<&codestax_harness::MotoCredentials>,
    dir: &Path,
    prefix: &str,
    action: &str,
) -> Value {
    let script = dir.join("s3_reader.py");
    std::fs::write(&script, S3_READER).unwrap();
    let mut cmd = Command::new(moto.python());
    if let Some(creds) = creds {
        cmd.env("S3_READER_KEY_ID", &creds.access_key_id)
            .env("S3_READER_SECRET", &creds.secret_access_key);
    }
    let out = cmd
        .arg(&script)
        .args([&moto.endpoint(), "audit", prefix, action])
        .output()
        .expect("run boto3");
    assert!(
        out.status.success(),
        "boto3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The stream's objects, each checked against the documented layout: the key names the org,
/// the receive hour of its records and their first and last `seq`; the records are in `seq`
/// order; gzip NDJSON with `Content-Type: application/gzip`.
fn s3_objects(moto: &codestax_harness::MotoS3, dir: &Path) -> Vec<S3Object> {
    s3_objects_as(moto, None, dir)
}

fn s3_objects_as(
    moto: &codestax_harness::MotoS3,
    creds: Option<&codestax_harness::MotoCredentials>,
    dir: &Path,
) -> Vec<S3Object> {
    let listed = s3_script_as(moto, creds, dir, &format!("{S3_PREFIX}/org={ORG}/"), "list");
    let mut objects = Vec::new();
    for o in listed.as_array().unwrap() {
        let key = o["key"].as_str().unwrap().to_string();
        let records = o["records"].as_array().unwrap().clone();
        assert_eq!(o["content_type"], "application/gzip", "{key}");
        let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        assert!(!seqs.is_empty(), "{key} is empty");
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{key}: {seqs:?}");
        let received =
            chrono::DateTime::parse_from_rfc3339(records[0]["received_at"].as_str().unwrap())
                .unwrap()
                .with_timezone(&chrono::Utc);
        let expected = format!(
            "{S3_PREFIX}/org={ORG}/date={}/hour={}/{:020}-{:020}.ndjson.gz",
            received.format("%Y-%m-%d"),
            received.format("%H"),
            seqs[0],
            seqs[seqs.len() - 1]
        );
        assert_eq!(key, expected, "the key of the object's records");
        for r in &records {
            let at = r["received_at"].as_str().unwrap();
            assert!(
                at.starts_with(&received.format("%Y-%m-%dT%H:").to_string()),
                "{key}: a record received at {at} is in another hour"
            );
        }
        objects.push(S3Object { key, records });
    }
    objects
}

fn s3_ids(objects: &[S3Object]) -> BTreeSet<String> {
    objects
        .iter()
        .flat_map(|o| &o.records)
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect()
}

fn wait_s3_ids(
    what: &str,
    moto: &codestax_harness::MotoS3,
    dir: &Path,
    ids: &[String],
) -> Vec<S3Object> {
    wait_s3_ids_as(what, moto, None, dir, ids)
}

fn wait_s3_ids_as(
    what: &str,
    moto: &codestax_harness::MotoS3,
    creds: Option<&codestax_harness::MotoCredentials>,
    dir: &Path,
    ids: &[String],
) -> Vec<S3Object> {
    let started = Instant::now();
    loop {
        let objects = s3_objects_as(moto, creds, dir);
        let got = s3_ids(&objects);
        let missing = ids.iter().filter(|i| !got.contains(*i)).count();
        if missing == 0 {
            return objects;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{what}: {missing} of {} records not in S3",
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every `seq` from 1 to the highest is in some object.
fn assert_no_seq_missing(objects: &[&S3Object]) {
    let seqs: BTreeSet<u64> = objects
        .iter()
        .flat_map(|o| &o.records)
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    let highest = *seqs.last().unwrap();
    let missing: Vec<u64> = (1..=highest).filter(|s| !seqs.contains(s)).collect();
    assert!(missing.is_empty(), "seqs missing from S3: {missing:?}");
}

#[test]
fn s3_stream_to_moto_delivers_in_order_through_a_kill_and_an_outage_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut moto) = codestax_harness::MotoS3::start_or_skip("s3 stream", dir.path()) else {
        return;
    };
    moto.create_bucket("audit").unwrap();
    let data = dir.path().join("collector");
    let mut c = Collector::start(&data, &settings());
    let owner = c.create_key(ORG, "ORG_OWNER");
    let ingest = c.create_key(ORG, "INGEST");
    let streams = format!("/api/v1/orgs/{ORG}/streams");
    let s3 = |bucket: &str| {
        json!({"kind": "s3", "bucket": bucket, "prefix": format!("/{S3_PREFIX}/"),
            "endpoint": moto.endpoint(), "region": "us-east-1",
            "access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET})
    };

    // Each problem names its field.
    for (mut destination, field) in [
        (s3("audit"), "destination.bucket"),
        (s3("audit"), "destination.secret_access_key"),
        (s3("audit"), "destination.prefix"),
        (s3("audit"), "destination.endpoint"),
    ] {
        let d = destination.as_object_mut().unwrap();
        match field {
            "destination.bucket" => drop(d.insert("bucket".into(), json!("Not_A_Bucket"))),
            "destination.secret_access_key" => drop(d.remove("secret_access_key")),
            "destination.prefix" => drop(d.insert("prefix".into(), json!("a/../b"))),
            _ => drop(d.insert("endpoint".into(), json!("http://user:pw@127.0.0.1:9/"))),
        }
        let (status, body) = request(
            &c,
            "POST",
            &streams,
            &owner,
            Some(json!({"name": "x", "destination": destination})),
        );
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }

    // A bucket that does not exist: failed, S3's 404 shown; /test reports the 404.
    let (status, missing) = request(
        &c,
        "POST",
        &streams,
        &owner,
        Some(json!({"name": "nowhere", "start": "beginning", "destination": s3("no-such-bucket")})),
    );
    assert_eq!(status, 201, "{missing}");
    let missing_id = missing["id"].as_str().unwrap().to_string();

    let before = ingest_n(&c, &ingest, "s3-before", 150);
    let (status, created) = request(
        &c,
        "POST",
        &streams,
        &owner,
        Some(json!({"name": "lake", "start": "beginning", "destination": s3("audit")})),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["has_secret"], true, "{created}");
    assert_eq!(created["destination"]["prefix"], S3_PREFIX, "{created}");
    for secret in [S3_KEY_ID, S3_SECRET] {
        assert!(!created.to_string().contains(secret), "{created}");
    }
    wait_s3_ids("records before the stream", &moto, dir.path(), &before);

    wait_until(
        "the missing bucket shows failed",
        Duration::from_secs(30),
        || {
            let s = stream_status(&c, &owner, &missing_id);
            s["status"]["state"] == "failed"
                && s["status"]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("404"))
        },
    );
    let (status, test) = request(
        &c,
        "POST",
        &format!("{streams}/{missing_id}/test"),
        &owner,
        None,
    );
    assert_eq!(status, 200, "{test}");
    assert_eq!(test["accepted"], false, "{test}");
    assert_eq!(test["status"], 404, "{test}");

    // /test writes its own object, outside the org= partitions.
    let (status, test) = request(&c, "POST", &format!("{streams}/{id}/test"), &owner, None);
    assert_eq!(status, 200, "{test}");
    assert_eq!(test["accepted"], true, "{test}");
    assert_eq!(test["status"], 200, "{test}");
    assert!(test["duration_ms"].is_u64(), "{test}");
    let tests = s3_script(
        &moto,
        dir.path(),
        &format!("{S3_PREFIX}/_codestax-test/org={ORG}/{id}.ndjson.gz"),
        "list",
    );
    assert_eq!(tests.as_array().unwrap().len(), 1, "{tests}");

    // kill -9 of the collector while records are being delivered.
    let burst = ingest_n(&c, &ingest, "s3-burst", 400);
    c.kill9();
    c.restart();
    let after = ingest_n(&c, &ingest, "s3-after-kill", 100);
    wait_s3_ids("records across a kill -9", &moto, dir.path(), &burst);
    wait_s3_ids("records after the restart", &moto, dir.path(), &after);

    // moto down for ~10 s. moto keeps objects in memory only, so what it held before is read
    // now, with the stream caught up and nothing being ingested: every record delivered so far
    // is in this snapshot, and everything after it must arrive once moto is back.
    wait_until("the stream caught up", Duration::from_secs(60), || {
        stream_status(&c, &owner, &id)["status"]["lag_records"] == 0
    });
    let snapshot = s3_objects(&moto, dir.path());
    let snapshot_highest = snapshot
        .iter()
        .flat_map(|o| &o.records)
        .filter_map(|r| r["seq"].as_u64())
        .max()
        .unwrap();
    moto.stop();
    let outage = ingest_n(&c, &ingest, "s3-outage", 200);
    std::thread::sleep(outage_length());
    let s = stream_status(&c, &owner, &id);
    assert_eq!(s["status"]["state"], "retrying", "{s}");
    assert!(s["status"]["lag_records"].as_u64().unwrap() >= 200, "{s}");
    moto.restart().unwrap();
    moto.create_bucket("audit").unwrap();
    let back = wait_s3_ids("records after the outage", &moto, dir.path(), &outage);
    for o in &back {
        assert!(
            o.records
                .iter()
                .all(|r| r["seq"].as_u64().unwrap() > snapshot_highest),
            "{} written after the outage holds records of before it",
            o.key
        );
    }
    let all: Vec<&S3Object> = snapshot.iter().chain(&back).collect();
    assert_no_seq_missing(&all);
    let ids = s3_ids(&snapshot)
        .union(&s3_ids(&back))
        .cloned()
        .collect::<BTreeSet<_>>();
    for i in before.iter().chain(&burst).chain(&after).chain(&outage) {
        assert!(ids.contains(i), "{i} is in S3");
    }

    // Replay from seq 20: the bucket emptied first, the objects written are exactly 20 to the
    // newest (and the replay's own audit entry after it).
    wait_until(
        "the stream caught up again",
        Duration::from_secs(60),
        || stream_status(&c, &owner, &id)["status"]["lag_records"] == 0,
    );
    let newest = stream_status(&c, &owner, &id)["status"]["delivered_seq"]
        .as_u64()
        .unwrap();
    s3_script(
        &moto,
        dir.path(),
        &format!("{S3_PREFIX}/org={ORG}/"),
        "delete",
    );
    let (status, body) = request(
        &c,
        "POST",
        &format!("{streams}/{id}/replay"),
        &owner,
        Some(json!({"from": 20})),
    );
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    let replayed = loop {
        let objects = s3_objects(&moto, dir.path());
        let seqs: BTreeSet<u64> = objects
            .iter()
            .flat_map(|o| &o.records)
            .map(|r| r["seq"].as_u64().unwrap())
            .collect();
        if (20..=newest).all(|s| seqs.contains(&s)) {
            break seqs;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the replay did not arrive"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(replayed.first(), Some(&20), "nothing before the asked seq");
    assert!(
        replayed.iter().all(|s| *s <= newest + 1),
        "only the replay's own audit entry after the newest: {:?}",
        replayed.range(newest..).collect::<Vec<_>>()
    );

    // The keys appear in no answer, file of the data directory or log line.
    let (_, list) = request(&c, "GET", &streams, &owner, None);
    for (what, text) in [
        ("the list", list.to_string()),
        ("the data directory", files_text(&data)),
        ("the collector's log", c.stderr()),
    ] {
        for secret in [S3_KEY_ID, S3_SECRET] {
            assert!(!text.contains(secret), "{what} holds an S3 key");
        }
    }
    assert!(c.stop());
}

#[test]
fn s3_batch_sent_again_after_a_lost_answer_and_a_kill_writes_the_same_object() {
    let dir = tempfile::tempdir().unwrap();
    let Some(moto) = codestax_harness::MotoS3::start_or_skip("s3 resend", dir.path()) else {
        return;
    };
    moto.create_bucket("audit").unwrap();
    let relay = AnswerHold::start(moto.port());
    let data = dir.path().join("collector");
    let mut c = Collector::start(&data, &settings());
    let owner = c.create_key(ORG, "ORG_OWNER");
    let ingest = c.create_key(ORG, "INGEST");

    // The first batch's PUT is stored by moto, its answer held: the cursor does not move.
    relay.hold(true);
    let first = ingest_n(&c, &ingest, "s3-held", 50);
    let (status, created) = request(
        &c,
        "POST",
        &format!("/api/v1/orgs/{ORG}/streams"),
        &owner,
        Some(
            json!({"name": "lake", "start": "beginning", "destination": {
            "kind": "s3", "bucket": "audit", "prefix": S3_PREFIX,
            "endpoint": relay.endpoint(), "region": "us-east-1",
            "access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET}}),
        ),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    wait_s3_ids("the held batch, stored", &moto, dir.path(), &first);
    let s = stream_status(&c, &owner, &id);
    assert_eq!(s["status"]["delivered_seq"], 0, "the answer was held: {s}");

    // More records behind it, then kill -9 before the answer arrives; the restarted collector
    // sends the batch again, with more records committed than the first time.
    let later = ingest_n(&c, &ingest, "s3-later", 200);
    // Committed to the index before the kill, so the restarted collector reads them at once
    // (a re-read of the whole backlog would write an object overlapping the held one).
    wait_until("the later records indexed", Duration::from_secs(60), || {
        c.search_all(ORG, "", &owner).len() >= first.len() + later.len()
    });
    c.kill9();
    relay.hold(false);
    c.restart();
    let restarted = ingest_n(&c, &ingest, "s3-restarted", 50);
    let all: Vec<String> = first
        .iter()
        .chain(&later)
        .chain(&restarted)
        .cloned()
        .collect();
    wait_s3_ids("every record", &moto, dir.path(), &all);
    wait_until("the stream caught up", Duration::from_secs(60), || {
        stream_status(&c, &owner, &id)["status"]["lag_records"] == 0
    });

    // Read back with boto3: each seq in exactly one object, none missing.
    let objects = s3_objects(&moto, dir.path());
    let mut holders: std::collections::BTreeMap<u64, Vec<&str>> = Default::default();
    for o in &objects {
        for r in &o.records {
            holders
                .entry(r["seq"].as_u64().unwrap())
                .or_default()
                .push(&o.key);
        }
    }
    let twice: Vec<_> = holders.iter().filter(|(_, keys)| keys.len() > 1).collect();
    assert!(twice.is_empty(), "seqs in two objects: {twice:?}");
    assert_no_seq_missing(&objects.iter().collect::<Vec<_>>());
    assert!(c.stop());
}

/// The PUTs into bucket `audit` moto refused with 403, from its log (a line per request).
fn refused_puts(moto: &codestax_harness::MotoS3) -> usize {
    std::fs::read_to_string(moto.log_path())
        .unwrap_or_default()
        .lines()
        // werkzeug colours a 4xx request line: `"\x1b[31m\x1b[1mPUT /audit/… HTTP/1.1\x1b[0m" 403`.
        .filter(|l| l.contains("PUT /audit/") && l.contains("\" 403"))
        .count()
}

/// moto with its IAM checks on: a stream whose credentials S3 refuses (403) is `failed` with the
/// 403 as `last_error`, keeps trying at the longest backoff (30 s, jittered down to half), and
/// loses nothing: a PATCH with credentials moto issued delivers every record. Temporary
/// credentials (an STS session: key id, secret, `session_token`) are refused with a wrong token
/// and deliver with the right one; the token is write-only like the other secrets.
#[test]
fn s3_stream_refused_with_403_is_failed_retries_slowly_and_delivers_once_patched() {
    let dir = tempfile::tempdir().unwrap();
    let Some(moto) = codestax_harness::MotoS3::start_or_skip("s3 auth", dir.path()) else {
        return;
    };
    moto.create_bucket("audit").unwrap();
    let creds = moto.enforce_auth(dir.path()).unwrap();
    let data = dir.path().join("collector");
    let mut c = Collector::start(&data, &settings());
    let owner = c.create_key(ORG, "ORG_OWNER");
    let ingest = c.create_key(ORG, "INGEST");
    let streams = format!("/api/v1/orgs/{ORG}/streams");
    let s3 = |key: &str, secret: &str, token: Option<&str>| {
        let mut d = json!({"kind": "s3", "bucket": "audit", "prefix": S3_PREFIX,
            "endpoint": moto.endpoint(), "region": "us-east-1",
            "access_key_id": key, "secret_access_key": secret});
        if let Some(t) = token {
            d["session_token"] = json!(t);
        }
        d
    };
    let failed_with = |id: &str, says: &str| {
        let s = stream_status(&c, &owner, id);
        s["status"]["state"] == "failed"
            && s["status"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(says))
    };
    let failed_with_403 = |id: &str| failed_with(id, "403");

    // A key moto never issued.
    let before = ingest_n(&c, &ingest, "s3-auth-before", 150);
    let (status, created) = request(
        &c,
        "POST",
        &streams,
        &owner,
        Some(
            json!({"name": "lake", "start": "beginning", "destination": s3(S3_KEY_ID, S3_SECRET, None)}),
        ),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    wait_until(
        "wrong credentials show failed",
        Duration::from_secs(30),
        || failed_with_403(&id),
    );

    // Retried at the longest backoff: the next refused PUT comes 15 to 30 s after the last.
    let seen = refused_puts(&moto);
    assert!(seen >= 1, "moto logged no refused PUT");
    let mut last = (seen, Instant::now());
    let mut gaps = Vec::new();
    let started = Instant::now();
    while gaps.len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(75),
            "no retry within {:?}: {gaps:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
        let n = refused_puts(&moto);
        if n > last.0 {
            assert_eq!(n, last.0 + 1, "several PUTs at once");
            // The first gap is measured from a moment after the failure: at most 30 s.
            gaps.push(last.1.elapsed());
            last = (n, Instant::now());
        }
    }
    println!("s3 failed (403): retried after {gaps:?}");
    assert!(gaps[0] <= Duration::from_secs(31), "{gaps:?}");
    assert!(
        gaps[1] >= Duration::from_millis(14_500) && gaps[1] <= Duration::from_secs(31),
        "a failed stream retries every 15 to 30 s: {gaps:?}"
    );
    assert!(failed_with_403(&id), "{}", stream_status(&c, &owner, &id));
    let s = stream_status(&c, &owner, &id);
    assert!(s["status"]["lag_records"].as_u64().unwrap() >= 150, "{s}");
    assert_eq!(s["status"]["delivered_seq"], 0, "{s}");

    // Fixed with a PATCH: everything arrives, nothing was dropped meanwhile.
    let during = ingest_n(&c, &ingest, "s3-auth-during", 100);
    let (status, body) = request(
        &c,
        "PATCH",
        &format!("{streams}/{id}"),
        &owner,
        Some(json!({"destination": s3(&creds.access_key_id, &creds.secret_access_key, None)})),
    );
    assert_eq!(status, 200, "{body}");
    let all: Vec<String> = before.iter().chain(&during).cloned().collect();
    let objects = wait_s3_ids_as("after the PATCH", &moto, Some(&creds), dir.path(), &all);
    assert_no_seq_missing(&objects.iter().collect::<Vec<_>>());
    wait_until("the stream is healthy", Duration::from_secs(30), || {
        let s = stream_status(&c, &owner, &id);
        s["status"]["state"] == "healthy" && s["status"]["lag_records"] == 0
    });

    // An STS session: a wrong token is refused like a wrong key, the right one delivers.
    let session = |token: &str| json!({"destination": s3(&creds.session_key_id, &creds.session_secret, Some(token))});
    let (status, body) = request(
        &c,
        "PATCH",
        &format!("{streams}/{id}"),
        &owner,
        Some(session("not-the-token")),
    );
    assert_eq!(status, 200, "{body}");
    let in_session = ingest_n(&c, &ingest, "s3-auth-session", 100);
    let started = Instant::now();
    // S3 answers a token it refuses with 400 `InvalidToken` (`ExpiredToken` once expired).
    while !failed_with(&id, "400 (InvalidToken)") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a wrong session token does not show failed: {}",
            stream_status(&c, &owner, &id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = request(
        &c,
        "PATCH",
        &format!("{streams}/{id}"),
        &owner,
        Some(session(&creds.session_token)),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["has_secret"], true, "{body}");
    wait_s3_ids_as(
        "with the session's credentials",
        &moto,
        Some(&creds),
        dir.path(),
        &in_session,
    );

    // Write-only: the token and keys are in no answer, file of the data directory or log line.
    let (_, list) = request(&c, "GET", &streams, &owner, None);
    for (what, text) in [
        ("the list", list.to_string()),
        ("the data directory", files_text(&data)),
        ("the collector's log", c.stderr()),
    ] {
        for secret in [
            creds.secret_access_key.as_str(),
            creds.session_secret.as_str(),
            creds.session_token.as_str(),
            S3_SECRET,
        ] {
            assert!(!text.contains(secret), "{what} holds an S3 secret");
        }
    }
    assert!(c.stop());
}
