//! The real `codestax-agent` binary against the in-test OTLP sink: steady appends with slow
//! writers, rename rotation, copytruncate, OTLP intake, `kill -9` at random moments over
//! several rounds, then SIGTERM. The set of records at the sink must be the set written: none
//! missing, duplicates only as replays of the same id.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use codestax_common::otlp::to_log_record;
use codestax_common::{Rules, parse_json_line};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use support::{Sink, emit_line};

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Ports {
    grpc: SocketAddr,
    http: SocketAddr,
    api: SocketAddr,
}

fn write_config(dir: &Path, sink: &Sink, ports: &Ports) -> PathBuf {
    let path = dir.join("agent.toml");
    fs::write(
        &path,
        format!(
            r#"data_dir = "{data}"
[collector]
endpoint = "{endpoint}"
token = "t0k"
[[sources.files]]
include = ["{logs}/app.log*"]
org_id = "acme"
fingerprint_bytes = 64
[otlp]
grpc_listen = "{grpc}"
http_listen = "{http}"
[api]
listen = "{api}"
[spool]
max_bytes = 4194304
segment_bytes = 65536
[batch]
max_records = 200
max_wait = "20ms"
[retry]
initial_backoff = "10ms"
max_backoff = "200ms"
[discovery]
rescan_interval = "500ms"
[log]
level = "warn"
"#,
            data = dir.join("data").display(),
            endpoint = sink.endpoint(),
            logs = dir.join("logs").display(),
            grpc = ports.grpc,
            http = ports.http,
            api = ports.api,
        ),
    )
    .unwrap();
    path
}

fn spawn_agent(config: &Path, dir: &Path) -> Child {
    let stderr = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.stderr"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_codestax-agent"))
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// `GET path` over plain HTTP/1.0; (status, body).
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
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
        let line = emit_line(id.as_deref(), &message);
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

async fn send_otlp(addr: SocketAddr, round: u64, written: &mut BTreeSet<String>) {
    let logs = (0..10)
        .map(|i| {
            let message = format!("otlp {round}-{i}");
            written.insert(message.clone());
            let id = format!("o-{round}-{i}");
            let line = emit_line(Some(&id), &message);
            to_log_record(&parse_json_line(line.as_bytes(), None, &Rules::new()).unwrap())
        })
        .collect();
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: logs,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut client) = LogsServiceClient::connect(format!("http://{addr}")).await
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_rotation_and_copytruncate_lose_nothing() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let sink = Sink::start().await;
    sink.require_token("t0k");
    let ports = Ports {
        grpc: free_addr(),
        http: free_addr(),
        api: free_addr(),
    };
    let config = write_config(dir.path(), &sink, &ports);
    let mut writer = Writer {
        logs,
        next: 0,
        written: BTreeSet::new(),
        rotations: 0,
    };
    let mut agent = spawn_agent(&config, dir.path());
    let mut kills = 0;
    for round in 0..6 {
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
        send_otlp(ports.grpc, round, &mut otlp).await;
        writer.written = otlp;
        if round == 2 {
            let (status, body) = http_get(ports.api, "/healthz").expect("healthz answers");
            assert_eq!(status, 200, "{body}");
            let (_, metrics) = http_get(ports.api, "/metrics").expect("metrics answer");
            assert!(
                metrics.contains("codestax_agent_lines_read_total"),
                "{metrics}"
            );
        }
        // kill -9 at a random moment, then start again.
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        agent.kill().unwrap();
        agent.wait().unwrap();
        kills += 1;
        agent = spawn_agent(&config, dir.path());
    }
    for _ in 0..50 {
        writer.line(&mut rng);
    }

    let expected = writer.written.clone();
    let complete = sink
        .wait_for(Duration::from_secs(60), |s| {
            let got: BTreeSet<&String> = s
                .accepted
                .iter()
                .filter_map(|r| r.message.as_ref())
                .collect();
            expected.iter().all(|m| got.contains(m))
        })
        .await;

    // SIGTERM: a clean stop with status 0.
    unsafe {
        libc::kill(agent.id() as i32, libc::SIGTERM);
    }
    let status = agent.wait().unwrap();
    let stderr = fs::read_to_string(dir.path().join("agent.stderr")).unwrap_or_default();

    let state = sink.state.lock().unwrap();
    let mut ids_by_message: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &state.accepted {
        ids_by_message
            .entry(r.message.clone().unwrap_or_default())
            .or_default()
            .insert(r.id().to_string());
    }
    let got: BTreeSet<String> = ids_by_message.keys().cloned().collect();
    let missing: Vec<_> = expected.difference(&got).take(20).collect();
    assert!(
        complete && missing.is_empty(),
        "seed {seed}: missing {missing:?}\nagent stderr:\n{stderr}"
    );
    let unexpected: Vec<_> = got.difference(&expected).collect();
    assert!(
        unexpected.is_empty(),
        "seed {seed}: never written: {unexpected:?}"
    );
    for (message, ids) in &ids_by_message {
        assert_eq!(
            ids.len(),
            1,
            "seed {seed}: {message} arrived under several ids {ids:?}"
        );
    }
    assert!(state.rejected.is_empty());
    assert!(status.success(), "SIGTERM exit status {status:?}\n{stderr}");
    eprintln!(
        "{} records written, {} received ({} replays of the same id) over {kills} kill -9 rounds",
        expected.len(),
        state.accepted.len(),
        state.accepted.len() - expected.len()
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
        text.push_str(&emit_line(None, &format!("file {n} {}", "x".repeat(40))));
    }
    fs::write(logs.join("app.log"), &text).unwrap();
    let sink = Sink::start().await;
    sink.require_token("t0k");
    let ports = Ports {
        grpc: free_addr(),
        http: free_addr(),
        api: free_addr(),
    };
    let config = write_config(dir.path(), &sink, &ports);
    let config_text = fs::read_to_string(&config)
        .unwrap()
        .replace("max_records = 200", "max_records = 2000")
        .replace("max_bytes = 4194304", "max_bytes = 268435456")
        .replace("segment_bytes = 65536", "segment_bytes = 8388608");
    fs::write(&config, config_text).unwrap();
    let started = Instant::now();
    let mut agent = spawn_agent(&config, dir.path());
    let done = sink
        .wait_for(Duration::from_secs(300), |s| {
            s.accepted.len() as u64 >= total
        })
        .await;
    let elapsed = started.elapsed();
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(done);
    eprintln!(
        "{total} records ({:.1} MB of lines) in {:.2} s: {:.0} records/s, {:.1} MB/s",
        text.len() as f64 / 1e6,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        text.len() as f64 / 1e6 / elapsed.as_secs_f64()
    );
}
