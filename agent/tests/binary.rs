//! The real `codestax-agent` binary against the in-test OTLP sink: steady appends with slow
//! writers, rename rotation, copytruncate, OTLP intake, `kill -9` at random moments over
//! several rounds, then SIGTERM. The set of records at the sink must be the set written: none
//! missing, duplicates only as replays of the same id.

mod support;

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use codestax_harness::{Agent, AgentOptions, emit_line};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use support::{Sink, SinkState};
use tokio::task::block_in_place;

/// The options both tests start from: the binary cargo built for these tests, one rotating
/// log, a small spool in small segments, short batches and retries.
fn options(logs: &Path) -> AgentOptions {
    AgentOptions {
        include: vec![format!("{}/app.log*", logs.display())],
        fingerprint_bytes: Some(64),
        spool_max_bytes: 4 << 20,
        spool_segment_bytes: 64 << 10,
        batch_max_records: 200,
        batch_max_wait: "20ms".into(),
        retry_max_backoff: "200ms".into(),
        rescan_interval: "500ms".into(),
        bin: Some(env!("CARGO_BIN_EXE_codestax-agent").into()),
        ..AgentOptions::default()
    }
}

/// How many kill -9 rounds a test makes: 6, more for a soak (`CODESTAX_KILL_ROUNDS=24`).
fn kill_rounds() -> u64 {
    std::env::var("CODESTAX_KILL_ROUNDS")
        .map(|r| r.parse().expect("CODESTAX_KILL_ROUNDS is a number"))
        .unwrap_or(6)
}

/// The seed of a run: `CODESTAX_TEST_SEED` to replay one, else from the clock.
fn seed() -> u64 {
    let seed = match std::env::var("CODESTAX_TEST_SEED") {
        Ok(s) => s.parse().expect("CODESTAX_TEST_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    } | 1;
    eprintln!("seed {seed} (replay with CODESTAX_TEST_SEED={seed})");
    seed
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

struct Writer {
    logs: PathBuf,
    next: u64,
    written: BTreeSet<String>,
    rotations: u64,
}

impl Writer {
    fn append(&self, text: &str) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join("app.log"))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// One line; every third carries its own id, the others get derived ids; some are
    /// written in two pieces with a pause between (a slow writer).
    fn line(&mut self, rng: &mut Rng) {
        let n = self.next;
        self.next += 1;
        let message = format!("file {n}");
        let id = n.is_multiple_of(3).then(|| format!("e-{n}"));
        let line = emit_line(id.as_deref(), &message, "scan.triggered", 0);
        if rng.below(10) == 0 {
            let cut = 1 + rng.below(line.len() as u64 - 1) as usize;
            self.append(&line[..cut]);
            std::thread::sleep(Duration::from_millis(15));
            self.append(&line[cut..]);
        } else {
            self.append(&line);
        }
        self.written.insert(message);
    }

    fn rename_rotate(&mut self) {
        self.rotations += 1;
        let _ = fs::rename(
            self.logs.join("app.log"),
            self.logs.join(format!("app.log.{}", self.rotations)),
        );
    }

    fn copytruncate(&mut self) {
        self.rotations += 1;
        let live = self.logs.join("app.log");
        if live.exists() {
            fs::copy(&live, self.logs.join(format!("app.log.{}", self.rotations))).unwrap();
            OpenOptions::new()
                .write(true)
                .open(&live)
                .unwrap()
                .set_len(0)
                .unwrap();
        }
    }
}

async fn send_otlp(endpoint: String, round: u64, written: &mut BTreeSet<String>) {
    let request = support::otlp_request(
        (0..10).map(|i| {
            let message = format!("otlp {round}-{i}");
            written.insert(message.clone());
            (format!("o-{round}-{i}"), message)
        }),
        0,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut client) = LogsServiceClient::connect(endpoint.clone()).await
            && let Ok(response) = client.export(request.clone()).await
        {
            assert!(response.into_inner().partial_success.is_none());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent's OTLP receiver never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every message of `expected` has arrived at the sink.
async fn wait_for_messages(sink: &Sink, expected: &BTreeSet<String>, timeout: Duration) -> bool {
    sink.wait_for(timeout, |s| s.has_all(expected)).await
}

/// What arrived is what was written: none missing (and `complete`), nothing else, every
/// message under one id (duplicates only as replays of the same id).
fn check_arrivals(
    seed: u64,
    expected: &BTreeSet<String>,
    state: &SinkState,
    complete: bool,
    stderr: &str,
) {
    let complete = if complete {
        Ok(())
    } else {
        Err("not all delivered in time".to_string())
    };
    if let Err(wrong) = state.delivered_once(expected).and(complete) {
        panic!("seed {seed}: {wrong}\nagent stderr:\n{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_rotation_and_copytruncate_lose_nothing() {
    let seed = seed();
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let sink = Sink::start().await;
    sink.require_token("t0k");
    let options = options(&logs);
    let mut agent = block_in_place(|| Agent::start(dir.path(), &sink.endpoint(), "t0k", &options));
    let mut writer = Writer {
        logs,
        next: 0,
        written: BTreeSet::new(),
        rotations: 0,
    };
    let mut kills = 0;
    for round in 0..kill_rounds() {
        for _ in 0..(40 + rng.below(80)) {
            writer.line(&mut rng);
            if rng.below(20) == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        match rng.below(3) {
            0 => writer.rename_rotate(),
            1 => writer.copytruncate(),
            _ => {}
        }
        for _ in 0..rng.below(30) {
            writer.line(&mut rng);
        }
        let mut otlp = std::mem::take(&mut writer.written);
        send_otlp(agent.otlp_grpc_endpoint(), round, &mut otlp).await;
        writer.written = otlp;
        if round == 2 {
            let ((status, body), metrics) = block_in_place(|| (agent.health(), agent.metrics()));
            assert_eq!(status, 200, "{body}");
            assert!(
                metrics.contains("codestax_agent_lines_read_total"),
                "{metrics}"
            );
        }
        // kill -9 at a random moment, then start again.
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        agent.kill9();
        kills += 1;
        // Not waiting for it to be up: the next lines race its start-up.
        agent.respawn();
    }
    for _ in 0..50 {
        writer.line(&mut rng);
    }

    let expected = writer.written.clone();
    let complete = wait_for_messages(&sink, &expected, Duration::from_secs(60)).await;

    // SIGTERM: a clean stop with status 0.
    let stopped = block_in_place(|| agent.stop());
    let stderr = agent.stderr();

    let state = sink.state.lock().unwrap();
    check_arrivals(seed, &expected, &state, complete, &stderr);
    assert!(state.rejected.is_empty());
    assert!(stopped, "SIGTERM: exit 0 within 30 s\n{stderr}");
    eprintln!(
        "{} records written, {} received ({} replays of the same id) over {kills} kill -9 rounds",
        expected.len(),
        state.accepted.len(),
        state.accepted.len() - expected.len()
    );
}

/// An app that writes without pause to `logs/app.jsonl` and rotates it by rename out of the
/// globs (`app.jsonl.1`, `app.jsonl.2`, ...), now and then right after creating it (the agent
/// may never see it under its first name); on its own thread until `stop`.
struct RotatingApp {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(BTreeSet<String>, u64)>,
}

impl RotatingApp {
    fn start(logs: PathBuf, seed: u64) -> RotatingApp {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut rng = Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B);
            let live = logs.join("app.jsonl");
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&live)
                .unwrap();
            let mut written = BTreeSet::new();
            let (mut n, mut rotations) = (0u64, 0u64);
            let mut until_rotation = 300 + rng.below(1200);
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                let message = format!("app {n}");
                let id = n.is_multiple_of(3).then(|| format!("r-{n}"));
                let line = emit_line(id.as_deref(), &message, "scan.triggered", 0);
                if rng.below(50) == 0 {
                    // Two writes: the agent may read the first half alone.
                    let cut = 1 + rng.below(line.len() as u64 - 1) as usize;
                    file.write_all(&line.as_bytes()[..cut]).unwrap();
                    file.write_all(&line.as_bytes()[cut..]).unwrap();
                } else {
                    file.write_all(line.as_bytes()).unwrap();
                }
                written.insert(message);
                n += 1;
                until_rotation -= 1;
                if until_rotation == 0 {
                    rotations += 1;
                    fs::rename(&live, logs.join(format!("app.jsonl.{rotations}"))).unwrap();
                    // The writer's last line goes to the renamed file (it has not reopened).
                    let message = format!("app {n}");
                    file.write_all(emit_line(None, &message, "scan.triggered", 0).as_bytes())
                        .unwrap();
                    written.insert(message);
                    n += 1;
                    file = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&live)
                        .unwrap();
                    until_rotation = if rng.below(4) == 0 {
                        1 + rng.below(5)
                    } else {
                        300 + rng.below(1200)
                    };
                }
                if n.is_multiple_of(4) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            (written, rotations)
        });
        RotatingApp { stop, thread }
    }

    /// Stops writing: the lines written and the rotations made.
    fn stop(self) -> (BTreeSet<String>, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_rename_rotation_out_of_the_glob_loses_nothing() {
    // The files rotated while the agent is down, and the one it was reading when killed, are
    // out of `*.jsonl`: the agent finds them again by inode, or by name and time.
    let seed = seed();
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let sink = Sink::start().await;
    sink.require_token("t0k");
    let options = AgentOptions {
        include: vec![format!("{}/*.jsonl", logs.display())],
        log_level: "info".into(),
        ..options(&logs)
    };
    let mut agent = block_in_place(|| Agent::start(dir.path(), &sink.endpoint(), "t0k", &options));
    let app = RotatingApp::start(logs.clone(), seed);
    let mut kills = 0;
    for _ in 0..kill_rounds() {
        tokio::time::sleep(Duration::from_millis(150 + rng.below(1000))).await;
        agent.kill9();
        kills += 1;
        // Down for a moment while the app writes and rotates on.
        tokio::time::sleep(Duration::from_millis(rng.below(700))).await;
        agent.respawn();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (expected, rotations) = app.stop();

    let complete = wait_for_messages(&sink, &expected, Duration::from_secs(40)).await;
    let stopped = block_in_place(|| agent.stop());
    let stderr = agent.stderr();

    let state = sink.state.lock().unwrap();
    check_arrivals(seed, &expected, &state, complete, &stderr);
    assert!(
        !stderr.contains("are lost"),
        "seed {seed}: a loss reported\n{stderr}"
    );
    assert!(state.rejected.is_empty());
    assert!(stopped, "SIGTERM: exit 0 within 30 s\n{stderr}");
    eprintln!(
        "{} records written, {} received ({} replays of the same id) over {rotations} rotations and {kills} kill -9 rounds",
        expected.len(),
        state.accepted.len(),
        state.accepted.len() - expected.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_deleted_before_it_was_read_is_reported_once_with_the_bytes_lost() {
    // The collector is away and the spool fills: the agent has seen lines of app.jsonl that it
    // cannot read yet. It is killed, and the file deleted while it is down: the bytes it saw
    // and never read are reported, once, in a warning and in the counters.
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let mut sink = Sink::start().await;
    sink.require_token("t0k");
    sink.pause().await;
    let mut lines = Vec::new();
    for n in 0..20_000u64 {
        lines.push(emit_line(None, &format!("old {n}"), "scan.triggered", 0));
    }
    let live = logs.join("app.jsonl");
    fs::write(&live, lines.concat()).unwrap();
    fs::write(
        logs.join("done.jsonl"),
        emit_line(None, "done", "scan.triggered", 0),
    )
    .unwrap();
    let options = AgentOptions {
        include: vec![format!("{}/*.jsonl", logs.display())],
        spool_max_bytes: 1 << 20,
        ..options(&logs)
    };
    let mut agent = block_in_place(|| Agent::start(dir.path(), &sink.endpoint(), "t0k", &options));
    let full = codestax_harness::wait_for_async(Duration::from_secs(30), || {
        block_in_place(|| agent.metric("codestax_agent_spool_full_pauses_total")) > 0.0
    })
    .await;
    assert!(full, "the spool never filled\n{}", agent.stderr());
    // The table, with the size seen, is written within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    agent.kill9();
    // Another file first: the inodes freed next are not reused under the watched names (a new
    // app.jsonl under the old inode would pass for the old one truncated).
    let mut text = String::new();
    for n in 0..10 {
        text.push_str(&emit_line(None, &format!("new {n}"), "scan.triggered", 0));
    }
    fs::write(logs.join("next.jsonl"), text).unwrap();
    fs::remove_file(&live).unwrap();
    fs::remove_file(logs.join("done.jsonl")).unwrap();
    sink.resume().await;
    agent.respawn();

    let news: BTreeSet<String> = (0..10).map(|n| format!("new {n}")).collect();
    let delivered = sink
        .wait_for(Duration::from_secs(60), |s| {
            let got: BTreeSet<&String> = s
                .accepted
                .iter()
                .filter_map(|r| r.message.as_ref())
                .collect();
            news.iter().all(|m| got.contains(m))
        })
        .await;
    let reported = codestax_harness::wait_for_async(Duration::from_secs(20), || {
        block_in_place(|| agent.metric("codestax_agent_files_lost_total")) == 1.0
    })
    .await;
    let stderr = agent.stderr();
    assert!(delivered && reported, "{stderr}");
    // What was read of the old file is a prefix of it; the rest is the loss reported.
    let read: BTreeSet<u64> = sink
        .state
        .lock()
        .unwrap()
        .accepted
        .iter()
        .filter_map(|r| r.message.as_deref()?.strip_prefix("old ")?.parse().ok())
        .collect();
    let k = read.len() as u64;
    assert!(k > 0 && k < 20_000, "{k} lines read before the kill");
    assert_eq!(read.last(), Some(&(k - 1)), "a prefix");
    let unread: usize = lines[k as usize..].iter().map(String::len).sum();
    assert_eq!(
        block_in_place(|| agent.metric("codestax_agent_file_bytes_lost_total")),
        unread as f64
    );
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("are lost")).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let size: usize = lines.iter().map(String::len).sum();
    assert!(
        warnings[0].contains(&live.display().to_string())
            && warnings[0].contains(&format!("bytes {} to {size} ", size - unread)),
        "{}",
        warnings[0]
    );
    // Once: a restart does not report it again.
    agent.kill9();
    block_in_place(|| agent.restart());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        block_in_place(|| agent.metric("codestax_agent_files_lost_total")),
        0.0
    );
    assert_eq!(
        agent
            .stderr()
            .lines()
            .filter(|l| l.contains("are lost"))
            .count(),
        1
    );
}

/// Informal throughput: a file of 100,000 lines (about 18 MB) through the binary to the sink.
/// `cargo test --release -p codestax-agent --test binary -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_file_to_sink() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let total = 100_000u64;
    let mut text = String::new();
    for n in 0..total {
        let message = format!("file {n} {}", "x".repeat(40));
        text.push_str(&emit_line(None, &message, "scan.triggered", 0));
    }
    fs::write(logs.join("app.log"), &text).unwrap();
    let sink = Sink::start().await;
    sink.require_token("t0k");
    let options = AgentOptions {
        batch_max_records: 2000,
        spool_max_bytes: 256 << 20,
        spool_segment_bytes: 8 << 20,
        ..options(&logs)
    };
    let started = Instant::now();
    let mut agent = block_in_place(|| Agent::start(dir.path(), &sink.endpoint(), "t0k", &options));
    let done = sink
        .wait_for(Duration::from_secs(300), |s| {
            s.accepted.len() as u64 >= total
        })
        .await;
    let elapsed = started.elapsed();
    agent.kill9();
    assert!(done);
    eprintln!(
        "{total} records ({:.1} MB of lines) in {:.2} s: {:.0} records/s, {:.1} MB/s",
        text.len() as f64 / 1e6,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        text.len() as f64 / 1e6 / elapsed.as_secs_f64()
    );
}
