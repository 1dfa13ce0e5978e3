//! The real agent binary tailing files (and receiving OTLP) into the real collector binary.
//!
//! Every case ends with the same check: the records of the org in the collector are exactly
//! the records written — no message missing, none that was never written, no id twice, no
//! message under two ids (lines without an id get one derived by the agent, which must be the
//! same on every replay), and each record that carried an id kept it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use codestax_tests::{Agent, AgentOptions, Collector, emit_line, emit_with_sdk, tail, wait_until};
use rand::{RngExt, SeedableRng};
use serde_json::Value;

const ORG: &str = "acme";
/// Every record written by these tests has this action; other actions are the bad ones.
const QUERY: &str = "action=scan.triggered";

/// Records written by a test: message → the id it carries (`None`: the agent derives one).
#[derive(Default)]
struct Ledger {
    tag: String,
    next: u64,
    written: BTreeMap<String, Option<String>>,
}

impl Ledger {
    fn new(tag: &str) -> Ledger {
        Ledger {
            tag: tag.to_string(),
            ..Ledger::default()
        }
    }

    /// A new record as an emit line; every other one has no id. `pad` bytes of metadata make
    /// lines longer.
    fn line_padded(&mut self, pad: usize) -> String {
        let n = self.next;
        self.next += 1;
        let message = format!("{} {n}", self.tag);
        let id = n.is_multiple_of(2).then(|| format!("{}-{n}", self.tag));
        self.written.insert(message.clone(), id.clone());
        emit_line(id.as_deref(), &message, "scan.triggered", pad)
    }

    fn line(&mut self) -> String {
        self.line_padded(0)
    }

    fn lines(&mut self, n: usize) -> String {
        (0..n).map(|_| self.line()).collect()
    }

    fn len(&self) -> u64 {
        self.written.len() as u64
    }

    fn merge(&mut self, other: Ledger) {
        self.written.extend(other.written);
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn append(path: &Path, text: &str) {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

fn append_to(file: &mut File, text: &str) {
    file.write_all(text.as_bytes()).unwrap();
}

fn open_append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// A collector with keys and an agent tailing `logs/` into it.
struct Rig {
    _dir: tempfile::TempDir,
    logs: PathBuf,
    collector: Collector,
    admin: String,
    agent: Agent,
}

impl Rig {
    /// `globs` are relative to the logs directory.
    fn start(globs: &[&str], configure: impl FnOnce(&mut AgentOptions)) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        fs::create_dir_all(&logs).unwrap();
        let collector = Collector::start(&dir.path().join("collector"), "");
        let ingest = collector.create_key(ORG, "INGEST");
        let admin = collector.create_key(ORG, "ORG_ADMIN");
        let mut options = AgentOptions {
            include: globs
                .iter()
                .map(|g| logs.join(g).display().to_string())
                .collect(),
            ..AgentOptions::default()
        };
        configure(&mut options);
        let agent = Agent::start(
            &dir.path().join("agent"),
            &collector.grpc_endpoint(),
            &ingest,
            &options,
        );
        Rig {
            _dir: dir,
            logs,
            collector,
            admin,
            agent,
        }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.logs.join(name)
    }

    fn total(&self) -> u64 {
        self.collector.total(ORG, QUERY, &self.admin)
    }

    /// Waits for the ledger's count, then checks the collector holds exactly the ledger.
    fn assert_delivered(&self, ledger: &Ledger, timeout: Duration) {
        let started = Instant::now();
        let wanted = ledger.len();
        let deadline = started + timeout;
        loop {
            let total = self.total();
            if total == wanted {
                break;
            }
            if Instant::now() > deadline {
                // Say what is wrong, not only the count.
                let report = compare(&self.collector.search_all(ORG, QUERY, &self.admin), ledger);
                panic!(
                    "{total} records in the collector after {timeout:?}, {wanted} written: {report}\n\
                     agent stderr:\n{}",
                    tail(&self.agent.stderr(), 3000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let entries = self.collector.search_all(ORG, QUERY, &self.admin);
        let report = compare(&entries, ledger);
        assert!(report.is_empty(), "{report}");
        eprintln!(
            "{}: {wanted} records delivered exactly once ({:.1} s of waiting)",
            ledger.tag,
            started.elapsed().as_secs_f64()
        );
    }
}

/// Differences between the collector's entries and the ledger ("" when none).
fn compare(entries: &[Value], ledger: &Ledger) -> String {
    let mut problems = Vec::new();
    let mut ids = BTreeSet::new();
    let mut by_message: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in entries {
        let id = e["id"].as_str().unwrap_or("").to_string();
        if !ids.insert(id.clone()) {
            problems.push(format!("id {id} listed twice"));
        }
        let message = e["message"].as_str().unwrap_or("").to_string();
        by_message.entry(message).or_default().push(id);
    }
    let got: BTreeSet<&String> = by_message.keys().collect();
    let wanted: BTreeSet<&String> = ledger.written.keys().collect();
    let missing: Vec<_> = wanted.difference(&got).take(10).collect();
    let extra: Vec<_> = got.difference(&wanted).take(10).collect();
    if !missing.is_empty() {
        problems.push(format!(
            "{} missing, e.g. {missing:?}",
            wanted.difference(&got).count()
        ));
    }
    if !extra.is_empty() {
        problems.push(format!("never written: {extra:?}"));
    }
    for (message, ids) in &by_message {
        if ids.len() > 1 {
            problems.push(format!("{message:?} stored under {ids:?}"));
        }
        if let (Some(Some(want)), Some(got)) = (ledger.written.get(message), ids.first())
            && want != got
        {
            problems.push(format!("{message:?} has id {got}, written with {want}"));
        }
    }
    problems.truncate(20);
    problems.join("\n")
}

#[test]
fn steady_appends_to_two_files() {
    let mut rig = Rig::start(&["*.jsonl"], |_| {});
    let mut ledger = Ledger::new("steady");
    let (a, b) = (rig.log("a.jsonl"), rig.log("b.jsonl"));
    let (mut fa, mut fb) = (open_append(&a), open_append(&b));
    for round in 0..40 {
        for _ in 0..25 {
            append_to(&mut fa, &ledger.line());
            append_to(&mut fb, &ledger.line());
        }
        if round % 4 == 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    rig.assert_delivered(&ledger, Duration::from_secs(30));
    assert!(rig.agent.stop(), "SIGTERM: exit 0");
}

#[test]
fn rename_rotation_in_and_out_of_the_globs() {
    let mut rig = Rig::start(&["*.jsonl"], |_| {});
    let mut ledger = Ledger::new("rename");
    let live = rig.log("app.jsonl");
    let mut file = open_append(&live);
    for generation in 1..=4 {
        for _ in 0..4 {
            append_to(&mut file, &ledger.lines(50));
            std::thread::sleep(Duration::from_millis(20));
        }
        // logrotate's `create`: rename, then the app keeps writing to the old descriptor for
        // a moment before it reopens. Odd generations leave the globs, even ones stay in.
        let rotated = if generation % 2 == 1 {
            rig.log(&format!("app.jsonl.{generation}"))
        } else {
            rig.log(&format!("app-{generation}.jsonl"))
        };
        fs::rename(&live, &rotated).unwrap();
        append_to(&mut file, &ledger.lines(30));
        file = open_append(&live);
    }
    append_to(&mut file, &ledger.lines(50));
    rig.assert_delivered(&ledger, Duration::from_secs(30));
    assert!(rig.agent.stop(), "SIGTERM: exit 0");
}

#[test]
fn copytruncate_with_the_copy_in_the_globs() {
    // The copy is matched too (`app.jsonl*`): its records come again with the same ids (explicit,
    // or derived from the same first bytes, offset and line) and the collector keeps one each.
    // With the copy outside the globs, lines written between the agent's last read and the
    // truncation would be lost — a race in copytruncate itself, for every agent.
    let mut rig = Rig::start(&["app.jsonl*"], |o| o.log_level = "info".into());
    let mut ledger = Ledger::new("copytruncate");
    let live = rig.log("app.jsonl");
    let mut file = open_append(&live);
    for round in 1..=3 {
        for _ in 0..3 {
            append_to(&mut file, &ledger.lines(100));
            std::thread::sleep(Duration::from_millis(20));
        }
        fs::copy(&live, rig.log(&format!("app.jsonl.{round}"))).unwrap();
        file.set_len(0).unwrap();
        // O_APPEND: the writer continues at the new end, 0.
        append_to(&mut file, &ledger.lines(100));
    }
    rig.assert_delivered(&ledger, Duration::from_secs(30));
    assert!(rig.agent.stop(), "SIGTERM: exit 0");
}

#[test]
fn deleted_file_is_read_to_its_end_then_released() {
    let mut rig = Rig::start(&["*.jsonl"], |_| {});
    let mut ledger = Ledger::new("deleted");
    let path = rig.log("short-lived.jsonl");
    let mut file = open_append(&path);
    append_to(&mut file, &ledger.lines(200));
    rig.assert_delivered(&ledger, Duration::from_secs(20));
    // The agent has it open now. A burst, the file deleted at once, and more lines written to
    // the deleted file by the writer that still holds it.
    append_to(&mut file, &ledger.lines(300));
    fs::remove_file(&path).unwrap();
    append_to(&mut file, &ledger.lines(100));
    drop(file);
    rig.assert_delivered(&ledger, Duration::from_secs(20));
    wait_until(
        "the deleted file released (files_open 0)",
        Duration::from_secs(15),
        || rig.agent.metric("codestax_agent_files_open") == 0.0,
    );
    assert!(rig.agent.stop(), "SIGTERM: exit 0");
}

#[test]
fn hundred_files_rotating_at_once() {
    let mut rig = Rig::start(&["svc-*.jsonl"], |_| {});
    let mut ledger = Ledger::new("hundred");
    let paths: Vec<PathBuf> = (0..100)
        .map(|i| rig.log(&format!("svc-{i:03}.jsonl")))
        .collect();
    let mut files: Vec<File> = paths.iter().map(|p| open_append(p)).collect();
    for f in &mut files {
        append_to(f, &ledger.lines(10));
    }
    wait_until("100 files tailed", Duration::from_secs(20), || {
        rig.agent.metric("codestax_agent_files_open") == 100.0
    });
    // A burst into every file, then all 100 renamed out of the globs at once (unread data
    // behind them), the writers add to the old files, then reopen new ones.
    for f in &mut files {
        append_to(f, &ledger.lines(10));
    }
    for p in &paths {
        let mut rotated = p.clone().into_os_string();
        rotated.push(".1");
        fs::rename(p, rotated).unwrap();
    }
    for f in &mut files {
        append_to(f, &ledger.lines(2));
    }
    files = paths.iter().map(|p| open_append(p)).collect();
    for f in &mut files {
        append_to(f, &ledger.lines(10));
    }
    rig.assert_delivered(&ledger, Duration::from_secs(40));
    assert!(rig.agent.stop(), "SIGTERM: exit 0");
}

#[test]
fn files_and_directories_appearing_later() {
    let mut rig = Rig::start(&["*.jsonl", "later/*/audit.jsonl"], |_| {});
    let mut ledger = Ledger::new("later");
    std::thread::sleep(Duration::from_millis(500));
    append(&rig.log("new.jsonl"), &ledger.lines(50));
    // The glob's base directory did not exist when the agent started.
    let deep = rig.log("later/svc-a");
    fs::create_dir_all(&deep).unwrap();
    append(&deep.join("audit.jsonl"), &ledger.lines(50));
    append(&deep.join("other.jsonl"), "not matched, never read\n");
    rig.assert_delivered(&ledger, Duration::from_secs(20));
    assert!(
        rig.agent.quarantine().is_empty(),
        "{:?}",
        rig.agent.quarantine()
    );
    assert!(rig.agent.stop(), "SIGTERM: exit 0");
}

#[test]
fn partial_line_completed_two_seconds_later() {
    let mut rig = Rig::start(&["*.jsonl"], |_| {});
    let mut ledger = Ledger::new("partial");
    let mut file = open_append(&rig.log("slow.jsonl"));
    append_to(&mut file, &ledger.lines(10));
    let slow = ledger.line_padded(200);
    let (head, rest) = slow.split_at(slow.len() / 2);
    append_to(&mut file, head);
    let mut early = Ledger::new("partial");
    early.written = ledger.written.clone();
    early.written.retain(|m, _| m != "partial 10");
    rig.assert_delivered(&early, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rig.total(), 10, "half a line is not a record");
    assert!(rig.agent.quarantine().is_empty(), "nor a quarantined line");
    append_to(&mut file, rest);
    append_to(&mut file, &ledger.lines(5));
    rig.assert_delivered(&ledger, Duration::from_secs(20));
    let entry = rig.collector.get_json(
        &format!("/api/v1/orgs/{ORG}/audit-log/partial-10"),
        &rig.admin,
    );
    assert_eq!(entry["metadata"]["pad"].as_str().map(str::len), Some(200));
    assert!(rig.agent.stop(), "SIGTERM: exit 0");
}

#[test]
fn kill_9_at_random_moments_while_a_writer_appends() {
    let seed: u64 = std::env::var("E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("kill -9 test seed {seed} (E2E_SEED={seed} repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut rig = Rig::start(&["app*.jsonl"], |_| {});
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let logs = rig.logs.clone();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
        std::thread::spawn(move || {
            let mut ledger = Ledger::new("kill9");
            let live = logs.join("app.jsonl");
            let mut file = open_append(&live);
            let mut rotations = 0;
            while !stop.load(Ordering::Relaxed) {
                let line = ledger.line();
                if rng.random_ratio(1, 20) {
                    // A slow writer: the line in two writes.
                    let cut = rng.random_range(1..line.len());
                    append_to(&mut file, &line[..cut]);
                    std::thread::sleep(Duration::from_millis(3));
                    append_to(&mut file, &line[cut..]);
                } else {
                    append_to(&mut file, &line);
                }
                if rng.random_ratio(1, 5) {
                    std::thread::sleep(Duration::from_millis(2));
                }
                if rng.random_ratio(1, 400) {
                    rotations += 1;
                    fs::rename(&live, logs.join(format!("app-{rotations}.jsonl"))).unwrap();
                    file = open_append(&live);
                }
            }
            (ledger, rotations)
        })
    };
    let rounds = 12;
    for _ in 0..rounds {
        std::thread::sleep(Duration::from_millis(rng.random_range(50..700)));
        rig.agent.kill9();
        if rng.random_bool(0.3) {
            std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
        }
        rig.agent.restart();
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (ledger, rotations) = writer.join().unwrap();
    eprintln!(
        "seed {seed}: {} records written over {rounds} kill -9 rounds, {rotations} rotations",
        ledger.len()
    );
    rig.assert_delivered(&ledger, Duration::from_secs(60));
    assert!(rig.agent.stop(), "SIGTERM after the kills: exit 0");
}

#[test]
fn collector_down_for_30_seconds() {
    let mut rig = Rig::start(&["*.jsonl"], |_| {});
    let mut ledger = Ledger::new("down");
    let path = rig.log("app.jsonl");
    let mut file = open_append(&path);
    append_to(&mut file, &ledger.lines(100));
    rig.assert_delivered(&ledger, Duration::from_secs(20));
    assert!(rig.collector.stop(), "collector SIGTERM: exit 0");
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(30) {
        append_to(&mut file, &ledger.lines(10));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        rig.agent.metric("codestax_agent_retries_total") > 0.0,
        "the agent retried"
    );
    let (status, health) = rig.agent.health();
    assert_eq!(status, 200, "{health}");
    assert!(
        health["last_error"].as_str().is_some(),
        "the send error is shown: {health}"
    );
    rig.collector.restart();
    rig.assert_delivered(&ledger, Duration::from_secs(30));
    assert!(rig.agent.stop(), "SIGTERM: exit 0");
}

/// An OTLP request of emit lines, in the attributes style.
fn otlp_request(
    lines: &[String],
) -> opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
    use codestax_common::{Rules, otlp::to_log_record, parse_json_line};
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    let log_records = lines
        .iter()
        .map(|l| to_log_record(&parse_json_line(l.as_bytes(), None, &Rules::new()).unwrap()))
        .collect();
    opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// One OTLP/gRPC export of emit lines to the agent; the gRPC status code.
fn grpc_export(endpoint: &str, lines: &[String]) -> tonic::Code {
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
    let request = otlp_request(lines);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = LogsServiceClient::connect(endpoint.to_string())
            .await
            .expect("connect to the agent's OTLP/gRPC receiver");
        match client.export(request).await {
            Ok(response) => {
                assert!(response.into_inner().partial_success.is_none());
                tonic::Code::Ok
            }
            Err(status) => status.code(),
        }
    })
}

#[test]
fn spool_full_pushes_back_then_drains() {
    let mut rig = Rig::start(&["*.jsonl"], |o| {
        o.spool_max_bytes = 1 << 20;
        o.spool_segment_bytes = 64 << 10;
    });
    assert!(rig.collector.stop(), "collector SIGTERM: exit 0");
    let mut ledger = Ledger::new("full");
    let mut file = open_append(&rig.log("big.jsonl"));
    let file_lines = 5000;
    for _ in 0..file_lines / 100 {
        let chunk: String = (0..100).map(|_| ledger.line_padded(500)).collect();
        append_to(&mut file, &chunk);
    }
    // Tailing pauses: the spool refuses the next round and the file stays behind.
    wait_until(
        "tailing paused on a full spool",
        Duration::from_secs(20),
        || rig.agent.metric("codestax_agent_spool_full_pauses_total") > 0.0,
    );
    let spooled = |rig: &Rig| rig.agent.metric("codestax_agent_records_spooled_total");
    let before = spooled(&rig);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(spooled(&rig), before, "no intake while the spool is full");
    assert!(
        before < file_lines as f64,
        "{before} of {file_lines} spooled"
    );
    assert!(rig.agent.metric("codestax_agent_file_lag_bytes") > 0.0);

    // OTLP intake: requests fill what room is left, then are refused with RESOURCE_EXHAUSTED.
    let mut otlp = Ledger::new("full-otlp");
    let mut refused = false;
    for _ in 0..200 {
        let mut batch = Ledger::new("full-otlp");
        batch.next = otlp.next;
        let lines: Vec<String> = (0..50).map(|_| batch.line_padded(500)).collect();
        match grpc_export(&rig.agent.otlp_grpc_endpoint(), &lines) {
            tonic::Code::Ok => {
                otlp.next = batch.next;
                otlp.merge(batch);
            }
            tonic::Code::ResourceExhausted => {
                refused = true;
                break;
            }
            other => panic!("OTLP/gRPC export answered {other:?}"),
        }
    }
    assert!(refused, "the full spool never refused OTLP/gRPC");
    // OTLP/HTTP: 503 with Retry-After.
    let mut refused_http = Ledger::new("refused-http");
    let lines: Vec<String> = (0..50).map(|_| refused_http.line_padded(500)).collect();
    let response = reqwest::blocking::Client::new()
        .post(rig.agent.otlp_http_url())
        .header("content-type", "application/x-protobuf")
        .body(prost::Message::encode_to_vec(&otlp_request(&lines)))
        .send()
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let (status, health) = rig.agent.health();
    assert_eq!(
        (status, health["status"].as_str()),
        (503, Some("spool_full"))
    );

    // The collector comes back: everything drains, and intake resumes.
    rig.collector.restart();
    ledger.merge(otlp);
    rig.assert_delivered(&ledger, Duration::from_secs(60));
    wait_until(
        "spool acknowledged to its end",
        Duration::from_secs(10),
        || rig.agent.health().1["spool_unacked_bytes"] == 0,
    );
    assert!(rig.agent.stop(), "SIGTERM: exit 0");
}

#[test]
fn malformed_long_and_rejected_lines_go_to_the_quarantine() {
    let mut rig = Rig::start(&["*.jsonl"], |_| {});
    let mut ledger = Ledger::new("mixed");
    let path = rig.log("mixed.jsonl");
    let mut file = open_append(&path);
    let huge = 5 << 20;
    let bad: Vec<Vec<u8>> = vec![
        b"this is not json\n".to_vec(),
        format!(
            "{{\"org_id\":\"{ORG}\",\"time\":\"{}\",\"action\":\"scan.triggered\"}}\n",
            now()
        )
        .into_bytes(),
        emit_line(Some("bad-email"), "x", "scan.triggered", 0)
            .replace("ada@acme.example", "not-an-email")
            .into_bytes(),
        emit_line(Some("huge"), "x", "scan.triggered", huge).into_bytes(),
        [b"{\"oops\xff\xfe\": 1}\n".as_slice()].concat(),
        // Valid for the agent (it cannot know the collector's catalog and limits), refused by
        // the collector: an action outside the catalog, a record over 64 KiB.
        emit_line(Some("uncatalogued"), "x", "scan.exploded", 0).into_bytes(),
        emit_line(Some("too-big"), "x", "scan.triggered", 100 << 10).into_bytes(),
        // What belongs to the collector alone is refused by the agent already.
        emit_line(Some("codestax:forged"), "x", "scan.triggered", 0).into_bytes(),
    ];
    for line in &bad {
        append_to(&mut file, &ledger.lines(10));
        file.write_all(line).unwrap();
    }
    append_to(&mut file, &ledger.lines(10));
    rig.assert_delivered(&ledger, Duration::from_secs(30));

    let mut entries = Vec::new();
    wait_until("8 quarantine entries", Duration::from_secs(20), || {
        entries = rig.agent.quarantine();
        entries.len() >= bad.len()
    });
    assert_eq!(entries.len(), bad.len(), "{entries:#?}");
    let find = |needle: &str| -> &Value {
        entries
            .iter()
            .find(|e| {
                e["line"].as_str().is_some_and(|l| l.contains(needle))
                    || e["line_hex"].as_str().is_some_and(|l| l.contains(needle))
            })
            .unwrap_or_else(|| panic!("no quarantine entry with {needle:?}: {entries:#?}"))
    };
    let file_entry = |needle: &str, kind: &str, reason: &str| {
        let e = find(needle);
        assert_eq!(e["kind"], kind, "{e}");
        assert_eq!(e["source"], "file", "{e}");
        assert_eq!(e["path"], path.display().to_string(), "{e}");
        assert!(e["offset"].is_u64(), "{e}");
        let r = e["reason"].as_str().unwrap();
        assert!(
            r.contains(reason),
            "{needle}: reason {r:?} lacks {reason:?}"
        );
        e.clone()
    };
    file_entry("this is not json", "invalid_record", "not valid JSON");
    file_entry(
        "\"action\":\"scan.triggered\"}",
        "invalid_record",
        "actor: required",
    );
    file_entry("not-an-email", "invalid_record", "actor.email");
    file_entry("7b226f6f7073", "invalid_record", "not valid UTF-8");
    file_entry(
        "codestax:forged",
        "invalid_record",
        "reserved for the collector's own entries",
    );
    // What the agent forwarded is written by its ingest key.
    let forwarded = rig
        .collector
        .get_json(&format!("/api/v1/orgs/{ORG}/audit-log/mixed-0"), &rig.admin);
    assert_eq!(forwarded["provenance"]["writer"], "ingest", "{forwarded}");
    assert!(
        forwarded["provenance"]["key_id"]
            .as_str()
            .is_some_and(|k| k.starts_with("key_")),
        "{forwarded}"
    );
    let long = file_entry("\"id\":\"huge\"", "line_too_long", "over max_line_bytes");
    assert_eq!(long["truncated"], true);
    assert!(long["line_bytes"].as_u64().unwrap() > huge as u64);

    let rejected = |needle: &str, reason: &str| {
        let e = find(needle);
        assert_eq!(
            (e["kind"].as_str(), e["source"].as_str()),
            (Some("rejected"), Some("collector")),
            "{e}"
        );
        let r = e["reason"].as_str().unwrap();
        assert!(
            r.contains(reason),
            "{needle}: reason {r:?} lacks {reason:?}"
        );
    };
    rejected("uncatalogued", "action");
    rejected("too-big", "bytes");
    assert_eq!(
        rig.agent.metric("codestax_agent_records_rejected_total"),
        2.0
    );
    for id in ["uncatalogued", "too-big", "huge", "bad-email"] {
        let status = rig
            .collector
            .get(&format!("/api/v1/orgs/{ORG}/audit-log/{id}"), &rig.admin)
            .status();
        assert_eq!(status, 404, "{id} is not stored");
    }
    assert!(rig.agent.stop(), "SIGTERM: exit 0");
}

#[tokio::test(flavor = "multi_thread")]
async fn opentelemetry_sdk_through_the_agent() {
    use opentelemetry_otlp::{LogExporter, Protocol, WithExportConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::logs::SdkLoggerProvider;

    let mut rig = tokio::task::block_in_place(|| Rig::start(&["*.jsonl"], |_| {}));
    // The agent does not know its key's org: OTLP records name theirs (here on the resource).
    let resource = || {
        Resource::builder()
            .with_service_name("e2e-app")
            .with_attribute(opentelemetry::KeyValue::new("audit.org_id", ORG))
            .build()
    };
    let grpc = LogExporter::builder()
        .with_tonic()
        .with_endpoint(rig.agent.otlp_grpc_endpoint())
        .build()
        .unwrap();
    let provider = SdkLoggerProvider::builder()
        .with_resource(resource())
        .with_batch_exporter(grpc)
        .build();
    tokio::task::spawn_blocking(move || emit_with_sdk(provider, "sdk-grpc"))
        .await
        .unwrap();
    let http = LogExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(rig.agent.otlp_http_url())
        .build()
        .unwrap();
    let provider = SdkLoggerProvider::builder()
        .with_resource(resource())
        .with_batch_exporter(http)
        .build();
    tokio::task::spawn_blocking(move || emit_with_sdk(provider, "sdk-http"))
        .await
        .unwrap();

    let mut ledger = Ledger::new("sdk");
    for run in ["grpc", "http"] {
        for i in 0..5 {
            ledger
                .written
                .insert(format!("sdk-{run} {i}"), Some(format!("sdk-{run}-{i}")));
        }
    }
    tokio::task::block_in_place(|| {
        rig.assert_delivered(&ledger, Duration::from_secs(20));
        let mut entries = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while entries.len() < 2 {
            assert!(
                Instant::now() < deadline,
                "2 quarantine entries expected: {entries:#?}\n{}\n{}",
                rig.agent.metrics(),
                rig.agent.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
            entries = rig.agent.quarantine();
        }
        assert_eq!(entries.len(), 2, "{entries:#?}");
        for e in &entries {
            assert_eq!(e["source"], "collector", "{e}");
            assert!(e["line"].as_str().unwrap().contains("scan.trigered"), "{e}");
            assert!(e["reason"].as_str().unwrap().contains("action"), "{e}");
        }
        let e = rig.collector.get_json(
            &format!("/api/v1/orgs/{ORG}/audit-log/sdk-grpc-0"),
            &rig.admin,
        );
        assert_eq!(e["repository"], "acme/api");
        assert_eq!(e["actor"]["email"], "ada@acme.example");
        assert!(rig.agent.stop(), "SIGTERM: exit 0");
    });
}
