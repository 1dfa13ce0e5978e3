//! The kill -9 soak: the real collector and agent binaries, an app writing emit lines into a
//! rotating file and an OpenTelemetry SDK client exporting through the agent's OTLP receiver,
//! while the agent, the collector or both are killed with SIGKILL at random moments and started
//! again. At the end every record written to a file or acknowledged to the client must be stored
//! exactly once (one record and one id per message, the id it was written with if it had one,
//! nothing that was never written) and the exported log's hash chain must verify.
//!
//! Bounded for CI by default; the long run is
//! `CODESTAX_SOAK_ROUNDS=60 CODESTAX_SOAK_ROTATE_EVERY=1500 cargo test --release -p codestax-tests --test e2e soak:: -- --nocapture`.
//! Knobs (environment): `CODESTAX_SOAK_ROUNDS` (kill rounds), `CODESTAX_SOAK_ROTATE_EVERY`
//! (lines per file before a rename), `CODESTAX_SOAK_FILE_RATE` and `CODESTAX_SOAK_OTLP_RATE`
//! (records per second at most; 0 = as fast as possible), `CODESTAX_TEST_SEED` (replay the
//! kill schedule and the writers' choices; thread timing still varies).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use codestax_tests::{Agent, AgentOptions, Collector, CollectorOptions, emit_line, run_cli, tail};
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLoggerProvider};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::Value;

const ORG: &str = "acme";
/// Every record of the soak has this action (the collector's own entries have others).
const ACTION: &str = "scan.triggered";
/// Records the OTLP client emits between two flushes.
const OTLP_CHUNK: usize = 20;
/// The client stops taking new records while this many wait for an acknowledgement.
const OTLP_MAX_UNACKED: usize = 400;
/// How long the client keeps retrying its unacknowledged records after the writing stops.
const OTLP_FINAL_RETRIES: Duration = Duration::from_secs(30);
/// The longest wait for everything to arrive at the end, plus 4 s per second of writing (an
/// unpaced long run leaves a backlog in proportion).
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(90);

/// What a run does; the environment overrides the bounded defaults.
#[derive(Debug, Clone, Copy)]
struct Settings {
    rounds: u64,
    rotate_every: u64,
    file_rate: u64,
    otlp_rate: u64,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |name: &str, default: u64| match std::env::var(name) {
            Ok(v) => v
                .parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
            Err(_) => default,
        };
        Settings {
            rounds: var("CODESTAX_SOAK_ROUNDS", 8),
            rotate_every: var("CODESTAX_SOAK_ROTATE_EVERY", 250).max(1),
            file_rate: var("CODESTAX_SOAK_FILE_RATE", 1000),
            otlp_rate: var("CODESTAX_SOAK_OTLP_RATE", 200),
        }
    }
}

/// The seed of a run: `CODESTAX_TEST_SEED` to replay one, else from the clock.
fn seed() -> u64 {
    match std::env::var("CODESTAX_TEST_SEED") {
        Ok(s) => s.parse().expect("CODESTAX_TEST_SEED is a u64"),
        Err(_) => SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// Where rotated files go relative to the agent's globs.
#[derive(Debug, Clone, Copy)]
enum Rotation {
    /// `include = logs/app.jsonl*`: `app.jsonl.N` is still matched.
    InGlob,
    /// `include = logs/*.jsonl`: `app.jsonl.N` is not; an agent that was down at the rename
    /// must find the rotated file again (its rediscovery after a restart).
    OutOfGlob,
}

impl Rotation {
    fn include(self) -> &'static str {
        match self {
            Rotation::InGlob => "app.jsonl*",
            Rotation::OutOfGlob => "*.jsonl",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Rotation::InGlob => "in-glob",
            Rotation::OutOfGlob => "out-of-glob",
        }
    }
}

/// Keeps a writer at `per_second` records on average (no limit at 0): it writes in bursts
/// without pause and sleeps only when ahead, so the backlog to drain at the end stays bounded.
struct Pace {
    started: Instant,
    per_second: u64,
}

impl Pace {
    fn new(per_second: u64) -> Pace {
        Pace {
            started: Instant::now(),
            per_second,
        }
    }

    fn keep(&self, done: u64) {
        if self.per_second == 0 {
            return;
        }
        let due = Duration::from_secs_f64(done as f64 / self.per_second as f64);
        if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}

/// Records by message, with the id each was written with (`None`: the agent derives one).
type Written = BTreeMap<String, Option<String>>;

/// What the app wrote to its files.
struct FileLedger {
    written: Written,
    rotations: u64,
}

fn open_append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn write(file: &mut File, bytes: &[u8]) {
    file.write_all(bytes).expect("append to the app's log");
}

/// The app: emit lines into `logs/app.jsonl` until `stop`, renamed to `app.jsonl.N` every
/// `rotate_every` lines (logrotate's `create`: a few lines still reach the renamed file before
/// the app reopens). One line in four carries its own id; one in fifty is written in two
/// pieces.
fn write_files(logs: PathBuf, settings: Settings, seed: u64, stop: Arc<AtomicBool>) -> FileLedger {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xf11e);
    let live = logs.join("app.jsonl");
    let mut file = open_append(&live);
    let mut ledger = FileLedger {
        written: Written::new(),
        rotations: 0,
    };
    let pace = Pace::new(settings.file_rate);
    let mut n: u64 = 0;
    let mut line = |file: &mut File, rng: &mut StdRng| {
        let message = format!("file {n}");
        let id = n.is_multiple_of(4).then(|| format!("f-{n}"));
        let text = emit_line(id.as_deref(), &message, ACTION, 0);
        if rng.random_ratio(1, 50) {
            let cut = rng.random_range(1..text.len());
            write(file, &text.as_bytes()[..cut]);
            write(file, &text.as_bytes()[cut..]);
        } else {
            write(file, text.as_bytes());
        }
        ledger.written.insert(message, id);
        n += 1;
        n
    };
    let mut since_rotation = 0;
    while !stop.load(Ordering::Relaxed) {
        let done = line(&mut file, &mut rng);
        since_rotation += 1;
        if since_rotation == settings.rotate_every {
            since_rotation = 0;
            ledger.rotations += 1;
            let rotated = logs.join(format!("app.jsonl.{}", ledger.rotations));
            fs::rename(&live, &rotated).expect("rotate the app's log");
            for _ in 0..rng.random_range(0..4) {
                line(&mut file, &mut rng);
            }
            file = open_append(&live);
        }
        if done.is_multiple_of(50) {
            pace.keep(done);
        }
    }
    ledger
}

/// What the OTLP exporter reported: the messages of every batch the agent acknowledged.
#[derive(Debug, Default)]
struct Outcomes {
    acked: BTreeSet<String>,
    exports_ok: u64,
    exports_failed: u64,
}

/// The SDK's OTLP exporter, noting which records each acknowledged export held. (The SDK's
/// batch processor only logs a failed export; the client needs to know what to send again.)
#[derive(Debug)]
struct Acknowledging<E> {
    inner: E,
    outcomes: Arc<Mutex<Outcomes>>,
}

impl<E: LogExporter> LogExporter for Acknowledging<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let messages: Vec<String> = batch
            .iter()
            .filter_map(|(record, _)| match record.body() {
                Some(AnyValue::String(s)) => Some(s.as_str().to_string()),
                _ => None,
            })
            .collect();
        let result = self.inner.export(batch).await;
        let mut outcomes = self.outcomes.lock().unwrap();
        match result {
            Ok(()) => {
                outcomes.exports_ok += 1;
                outcomes.acked.extend(messages);
            }
            Err(_) => outcomes.exports_failed += 1,
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// A record of the OTLP client, sent again as it was until acknowledged.
struct OtlpRecord {
    message: String,
    id: Option<String>,
    time: SystemTime,
}

/// What the OTLP client sent: every record it tried, and those acknowledged.
struct OtlpLedger {
    attempted: Written,
    acked: BTreeSet<String>,
    exports_ok: u64,
    exports_failed: u64,
    resent: u64,
    unacked_at_end: usize,
}

/// The client: records through the OpenTelemetry SDK (batch processor, OTLP/gRPC exporter) to
/// the agent, flushed every [`OTLP_CHUNK`] records; what no acknowledged export held is emitted
/// again, same id, same time, same content (half carry no id: the agent's content id must come
/// out the same). After `stop` it retries what is left for [`OTLP_FINAL_RETRIES`].
fn send_otlp(endpoint: String, settings: Settings, stop: Arc<AtomicBool>) -> OtlpLedger {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // The exporter's channel runs its connection on this runtime.
    let _runtime = runtime.enter();
    let exporter = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(3))
        .build()
        .expect("OTLP exporter");
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let provider = SdkLoggerProvider::builder()
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("soak-app")
                .with_attribute(opentelemetry::KeyValue::new("audit.org_id", ORG))
                .build(),
        )
        .with_batch_exporter(Acknowledging {
            inner: exporter,
            outcomes: outcomes.clone(),
        })
        .build();
    let logger = provider.logger("codestax-soak");
    let emit = |r: &OtlpRecord| {
        let mut record = logger.create_log_record();
        record.set_severity_number(Severity::Info);
        record.set_timestamp(r.time);
        record.set_body(r.message.clone().into());
        if let Some(id) = &r.id {
            record.add_attribute("audit.id", id.clone());
        }
        record.add_attribute("audit.action", ACTION);
        record.add_attribute("enduser.id", "u-7");
        record.add_attribute("audit.actor.email", "ada@acme.example");
        record.add_attribute("audit.repository", "acme/api");
        logger.emit(record);
    };
    let pace = Pace::new(settings.otlp_rate);
    let mut attempted = Written::new();
    let mut unacked: Vec<OtlpRecord> = Vec::new();
    let mut resent = 0;
    let mut n: u64 = 0;
    let mut stopped: Option<Instant> = None;
    loop {
        if stopped.is_none() && stop.load(Ordering::Relaxed) {
            stopped = Some(Instant::now());
        }
        if let Some(at) = stopped
            && (unacked.is_empty() || at.elapsed() > OTLP_FINAL_RETRIES)
        {
            break;
        }
        resent += unacked.len() as u64;
        if stopped.is_none() && unacked.len() < OTLP_MAX_UNACKED {
            for _ in 0..OTLP_CHUNK {
                let message = format!("otlp {n}");
                let id = n.is_multiple_of(2).then(|| format!("o-{n}"));
                attempted.insert(message.clone(), id.clone());
                unacked.push(OtlpRecord {
                    message,
                    id,
                    time: SystemTime::now(),
                });
                n += 1;
            }
        }
        for r in &unacked {
            emit(r);
        }
        // The exporter's result is in `outcomes`, per batch.
        let _ = provider.force_flush();
        let before = unacked.len();
        {
            let outcomes = outcomes.lock().unwrap();
            unacked.retain(|r| !outcomes.acked.contains(&r.message));
        }
        if unacked.len() == before {
            // Nothing went through: the agent is down or busy.
            std::thread::sleep(Duration::from_millis(100));
        }
        pace.keep(n);
    }
    let _ = provider.shutdown();
    let outcomes = outcomes.lock().unwrap();
    OtlpLedger {
        attempted,
        acked: outcomes.acked.clone(),
        exports_ok: outcomes.exports_ok,
        exports_failed: outcomes.exports_failed,
        resent,
        unacked_at_end: unacked.len(),
    }
}

/// Whether the agent has nothing left to send: its spool acknowledged to the end and every
/// file it tails read to the end. False while it does not answer.
fn agent_drained(agent: &Agent, client: &reqwest::blocking::Client) -> bool {
    let get = |path: &str| -> Option<String> {
        let r = client.get(agent.api_url(path)).send().ok()?;
        r.text().ok()
    };
    let Some(health) = get("/healthz").and_then(|h| serde_json::from_str::<Value>(&h).ok()) else {
        return false;
    };
    let Some(metrics) = get("/metrics") else {
        return false;
    };
    let lag = codestax_harness::metric_sum(&metrics, "codestax_agent_file_lag_bytes");
    health["spool_unacked_bytes"] == 0 && lag == 0.0
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Agent,
    Collector,
    Both,
}

#[derive(Debug, Default)]
struct Kills {
    agent: u64,
    collector: u64,
    both: u64,
}

/// What the collector holds of the soak's records, compared with what was written.
#[derive(Debug, Default)]
struct Comparison {
    stored: usize,
    /// Written to a file or acknowledged, not stored.
    missing: Vec<String>,
    /// Stored more than once: message → ids.
    duplicated: Vec<(String, Vec<String>)>,
    /// Stored, never written nor attempted.
    unknown: Vec<String>,
    /// Stored under another id than it was written with: (message, written, stored).
    wrong_id: Vec<(String, String, String)>,
}

impl Comparison {
    fn ok(&self) -> bool {
        self.missing.is_empty()
            && self.duplicated.is_empty()
            && self.unknown.is_empty()
            && self.wrong_id.is_empty()
    }

    fn describe(&self) -> String {
        let first = |v: &[String]| v.iter().take(20).cloned().collect::<Vec<_>>();
        format!(
            "{} missing, first 20: {:?}\n{} duplicated, first 20: {:?}\n{} never written, first 20: {:?}\n{} under another id, first 20 (message, written, stored): {:?}",
            self.missing.len(),
            first(&self.missing),
            self.duplicated.len(),
            self.duplicated.iter().take(20).collect::<Vec<_>>(),
            self.unknown.len(),
            first(&self.unknown),
            self.wrong_id.len(),
            self.wrong_id.iter().take(20).collect::<Vec<_>>(),
        )
    }
}

/// `stored`: the soak's records in an export of the log. `must`: what has to be there (written
/// to a file or acknowledged); `may`: what may be there (also sent but never acknowledged).
fn compare(stored: &[Value], must: &Written, may: &Written) -> Comparison {
    let mut by_message: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in stored {
        let message = r["message"].as_str().unwrap_or("").to_string();
        let id = r["id"].as_str().unwrap_or("").to_string();
        by_message.entry(message).or_default().push(id);
    }
    let mut c = Comparison {
        stored: stored.len(),
        ..Comparison::default()
    };
    c.missing = must
        .keys()
        .filter(|m| !by_message.contains_key(*m))
        .cloned()
        .collect();
    for (message, ids) in &by_message {
        if ids.len() > 1 {
            c.duplicated.push((message.clone(), ids.clone()));
        }
        match must.get(message).or_else(|| may.get(message)) {
            None => c.unknown.push(message.clone()),
            Some(Some(want)) if ids.iter().any(|id| id != want) => {
                c.wrong_id
                    .push((message.clone(), want.clone(), ids.join(",")));
            }
            Some(_) => {}
        }
    }
    c
}

/// What the agent said it could not read: its "file gone before it was read to its end"
/// warnings, over all its runs.
#[derive(Debug, Default, PartialEq)]
struct ReportedLost {
    files: u64,
    bytes: u64,
}

fn files_reported_lost(agent_stderr: &str) -> ReportedLost {
    let mut lost = ReportedLost::default();
    for line in agent_stderr
        .lines()
        .map(without_colours)
        .filter(|l| l.contains("file gone before it was read to its end"))
    {
        lost.files += 1;
        lost.bytes += line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("bytes=")?.parse::<u64>().ok())
            .unwrap_or(0);
    }
    lost
}

/// The line without terminal colour codes (`ESC [ … m`), which the agent's log may carry.
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn the_agents_lost_file_warnings_are_counted_with_their_bytes() {
    let stderr = "2026-12-03T10:00:00Z  WARN codestax_agent: file gone before it was read to its end (deleted): bytes 10 to 60 of it were not read and are lost file=/x/a.log from=10 to=60 bytes=50\n\
                  \u{1b}[2m2026\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m file gone before it was read to its end (moved away) \u{1b}[3mbytes\u{1b}[0m\u{1b}[2m=\u{1b}[0m7\n\
                  INFO something else bytes=1000\n";
    assert_eq!(
        files_reported_lost(stderr),
        ReportedLost {
            files: 2,
            bytes: 57
        }
    );
}

fn soak(rotation: Rotation) {
    let settings = Settings::from_env();
    let seed = seed();
    let mode = rotation.name();
    eprintln!("soak {mode}: seed {seed} (replay with CODESTAX_TEST_SEED={seed}), {settings:?}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();

    let mut collector = Collector::configure(CollectorOptions {
        stderr: Some(dir.path().join("collector.stderr")),
        ..CollectorOptions::for_tests(&dir.path().join("collector"), "")
    })
    .unwrap_or_else(|e| panic!("{e}"));
    collector.launch().unwrap_or_else(|e| panic!("{e}"));
    let ingest = collector.create_key(ORG, "INGEST");
    let admin = collector.create_key(ORG, "ORG_ADMIN");
    let mut agent = Agent::start(
        &dir.path().join("agent"),
        &collector.grpc_endpoint(),
        &ingest,
        &AgentOptions {
            include: vec![logs.join(rotation.include()).display().to_string()],
            ..AgentOptions::default()
        },
    );

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let files = {
        let (logs, stop) = (logs.clone(), stop.clone());
        std::thread::spawn(move || write_files(logs, settings, seed, stop))
    };
    let otlp = {
        let (endpoint, stop) = (agent.otlp_grpc_endpoint(), stop.clone());
        std::thread::spawn(move || send_otlp(endpoint, settings, stop))
    };

    let mut kills = Kills::default();
    for _ in 0..settings.rounds {
        std::thread::sleep(Duration::from_millis(rng.random_range(200..1500)));
        let target = match rng.random_range(0..10) {
            0..5 => Target::Agent,
            5..8 => Target::Collector,
            _ => Target::Both,
        };
        let down = Duration::from_millis(if rng.random_bool(0.3) {
            rng.random_range(0..500)
        } else {
            0
        });
        // The agent is either waited for or left to race what comes next.
        let wait_for_agent = rng.random_bool(0.5);
        let start_agent = |agent: &mut Agent| {
            if wait_for_agent {
                agent.restart();
            } else {
                agent.respawn();
            }
        };
        match target {
            Target::Agent => {
                kills.agent += 1;
                agent.kill9();
                std::thread::sleep(down);
                start_agent(&mut agent);
            }
            Target::Collector => {
                kills.collector += 1;
                collector.kill9();
                std::thread::sleep(down);
                collector.restart();
            }
            Target::Both => {
                kills.both += 1;
                agent.kill9();
                collector.kill9();
                std::thread::sleep(down);
                if rng.random_bool(0.5) {
                    collector.restart();
                    start_agent(&mut agent);
                } else {
                    start_agent(&mut agent);
                    collector.restart();
                }
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let files = files.join().expect("the app's writer");
    let otlp = otlp.join().expect("the OTLP client");
    let writing = started.elapsed();

    // What must arrive: every file line, every acknowledged OTLP record.
    let mut must = files.written.clone();
    let mut may = Written::new();
    for (message, id) in &otlp.attempted {
        let into = if otlp.acked.contains(message) {
            &mut must
        } else {
            &mut may
        };
        into.insert(message.clone(), id.clone());
    }

    // Until every record that must arrive is stored and the agent is drained, or the timeout.
    // No early exit on a quiet spell: an agent still finding rotated files looks quiet to the
    // drain check (it covers the files it has open), and a false "missing" would hide the real
    // question. A real loss costs the whole timeout, then shows what is missing.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let query = format!("action={ACTION}");
    let waiting = Instant::now();
    let timeout = ARRIVAL_TIMEOUT + writing * 4;
    let (mut last, mut last_change) = (u64::MAX, Instant::now());
    let ended = loop {
        let total = collector.total(ORG, &query, &admin);
        if total != last {
            (last, last_change) = (total, Instant::now());
        }
        if total >= must.len() as u64
            && last_change.elapsed() > Duration::from_secs(1)
            && agent_drained(&agent, &client)
        {
            break "complete".to_string();
        }
        if waiting.elapsed() > timeout {
            break format!(
                "timed out after {:.0} s with {total} of {} stored, the last arrival {:.1} s before, agent {}",
                timeout.as_secs_f64(),
                must.len(),
                last_change.elapsed().as_secs_f64(),
                if agent_drained(&agent, &client) {
                    "drained"
                } else {
                    "not drained"
                }
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let waited = waiting.elapsed();

    // The whole log, exported with the CLI; the soak's records compared, the chain verified.
    let work = dir.path();
    let url = collector.url("");
    let export = run_cli(
        work,
        &[
            "export",
            "--format",
            "ndjson",
            "--output",
            "all.ndjson",
            "--url",
            &url,
            "--token",
            &admin,
            "--org",
            ORG,
        ],
    );
    let stderrs = |agent: &Agent, collector: &Collector| {
        format!(
            "agent stderr (tail):\n{}\ncollector stderr (tail):\n{}",
            tail(&agent.stderr(), 4000),
            tail(&collector.stderr(), 4000)
        )
    };
    assert!(
        export.status.success(),
        "seed {seed}: codestax export: {}\n{}\n{}",
        export.status,
        String::from_utf8_lossy(&export.stderr),
        stderrs(&agent, &collector)
    );
    let exported = fs::read_to_string(work.join("all.ndjson")).unwrap();
    let records: Vec<Value> = exported
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("an exported line is JSON"))
        .filter(|r: &Value| r["action"] == ACTION)
        .collect();
    let comparison = compare(&records, &must, &may);
    let lost = files_reported_lost(&agent.stderr());
    let key = collector.get_json("/api/v1/signing-key", &admin)["verifier_key"]
        .as_str()
        .expect("the collector's verifier key")
        .to_string();
    let verify = run_cli(
        work,
        &["verify", "--input", "all.ndjson", "--public-key", &key],
    );
    let checking = waiting.elapsed() - waited;

    eprintln!(
        "soak {mode} seed {seed}: {} rounds, kills agent {} collector {} both {}; written {} to files \
         ({} rotations) + {} acked over OTLP ({} sent, {} resent, {} exports ok, {} failed, {} never acked); \
         stored {}, missing {}, duplicated {}, never written {}, under another id {}; \
         agent reported {} files gone unread ({} bytes); \
         {:.1} s writing, {:.1} s waiting for arrival ({ended}), {:.1} s to export and verify",
        settings.rounds,
        kills.agent,
        kills.collector,
        kills.both,
        files.written.len(),
        files.rotations,
        otlp.acked.len(),
        otlp.attempted.len(),
        otlp.resent,
        otlp.exports_ok,
        otlp.exports_failed,
        otlp.unacked_at_end,
        comparison.stored,
        comparison.missing.len(),
        comparison.duplicated.len(),
        comparison.unknown.len(),
        comparison.wrong_id.len(),
        lost.files,
        lost.bytes,
        writing.as_secs_f64(),
        waited.as_secs_f64(),
        checking.as_secs_f64(),
    );
    assert!(
        comparison.ok(),
        "soak {mode}, seed {seed} (replay with CODESTAX_TEST_SEED={seed}):\n{}\n{}",
        comparison.describe(),
        stderrs(&agent, &collector)
    );
    assert!(
        verify.status.success(),
        "seed {seed}: codestax verify on the export: {}\n{}\n{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr),
        stderrs(&agent, &collector)
    );
    let server = collector.get_json(&format!("/api/v1/orgs/{ORG}/audit-log/verify"), &admin);
    assert_eq!(
        server["ok"], true,
        "seed {seed}: the collector's verify: {server}"
    );
    for (what, text) in [("agent", agent.stderr()), ("collector", collector.stderr())] {
        assert!(
            !text.contains("panicked"),
            "seed {seed}: the {what} panicked:\n{}",
            tail(&text, 4000)
        );
    }
    assert!(agent.stop(), "seed {seed}: agent SIGTERM: exit 0");
    assert!(collector.stop(), "seed {seed}: collector SIGTERM: exit 0");
}

#[test]
fn kill_9_soak_with_rotation_inside_the_glob() {
    soak(Rotation::InGlob);
}

#[test]
fn kill_9_soak_with_rotation_out_of_the_glob() {
    soak(Rotation::OutOfGlob);
}
