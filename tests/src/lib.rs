//! Harness for end-to-end tests over the real binaries: start a collector on free ports and a
//! temporary data dir, create keys with its CLI, talk to it over HTTP, stop or kill it; start an
//! agent that tails files into it, stop, kill or restart it, read its metrics and quarantine.
//!
//! The binaries are the ones `cargo test --workspace` builds next to the test executables.

use reqwest::blocking::{Client, Response};
use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Builds the workspace's binaries once per test process, so the tests never run stale ones
/// (`cargo test -p codestax-tests` alone does not rebuild other packages' binaries).
fn ensure_built() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--workspace", "--bins"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --workspace --bins failed");
    });
}

/// Path of a workspace binary, built for these tests.
pub fn bin(name: &str) -> PathBuf {
    ensure_built();
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo test --workspace` (or `cargo build --workspace`) first",
        path.display()
    );
    path
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A collector process under test.
pub struct Collector {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub http_port: u16,
    pub grpc_port: u16,
    /// `metrics.listen`'s port, given by environment variable, so `extra_toml` may hold a
    /// `[metrics]` table of its own.
    pub metrics_port: u16,
    client: Client,
}

impl Collector {
    /// Starts a collector on `data_dir` with fresh ports and waits until it is ready.
    /// `extra_toml` is appended to the generated config.
    pub fn start(data_dir: &Path, extra_toml: &str) -> Collector {
        let http_port = free_port();
        let grpc_port = free_port();
        let metrics_port = free_port();
        let config_path = data_dir.with_extension("toml");
        let config = format!(
            "data_dir = {data:?}\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n[grpc]\nlisten = \"127.0.0.1:{grpc_port}\"\n[index]\ncommit_interval = \"200ms\"\nwriter_memory_bytes = 50000000\n{extra_toml}\n",
            data = data_dir.display().to_string(),
        );
        std::fs::write(&config_path, config).expect("write config");
        let mut c = Collector {
            child: None,
            data_dir: data_dir.to_path_buf(),
            config_path,
            http_port,
            grpc_port,
            metrics_port,
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
        };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        let child = Command::new(bin("codestax-collector"))
            .arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", "warn")
            .env(
                "CODESTAX_COLLECTOR__METRICS__LISTEN",
                format!("127.0.0.1:{}", self.metrics_port),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("start codestax-collector");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Starts the same collector again (same data dir and ports) after a stop or kill.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill first");
        self.spawn();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("codestax-collector exited during start: {status}");
            }
            if let Ok(r) = self.client.get(self.url("/readyz")).send()
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "collector not ready within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A `/proc/PID/status` memory figure of the running process (`VmRSS`, `VmHWM`), in KiB.
    pub fn memory_kib(&self, field: &str) -> u64 {
        let pid = self.pid().expect("collector running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// The HTTP client, for requests the helpers here do not cover (PUT, DELETE, ...).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A URL on the metrics listener (`metrics.listen`).
    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.metrics_port)
    }

    /// The Prometheus text of the metrics listener.
    pub fn metrics(&self) -> String {
        let r = self
            .client
            .get(self.metrics_url("/metrics"))
            .send()
            .expect("GET /metrics");
        assert_eq!(r.status(), 200, "GET /metrics");
        r.text().expect("metrics text")
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// Creates a key with the collector's own CLI (`keys create`) and returns the token.
    pub fn create_key(&self, org: &str, role: &str) -> String {
        let out = Command::new(bin("codestax-collector"))
            .args(["keys", "create", "--org", org, "--role", role, "--config"])
            .arg(&self.config_path)
            .output()
            .expect("run keys create");
        assert!(
            out.status.success(),
            "keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).expect("utf-8 token");
        let token = token.trim().to_string();
        assert!(
            !token.is_empty() && !token.contains(char::is_whitespace),
            "one token: {token:?}"
        );
        // A running collector picks new keys up within a second.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let r = self.get(&format!("/api/v1/orgs/{org}/audit-log/__probe__"), &token);
            if r.status() != 401 {
                return token;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the collector did not accept the new key within 5 s");
    }

    pub fn get(&self, path_and_query: &str, token: &str) -> Response {
        self.client
            .get(self.url(path_and_query))
            .bearer_auth(token)
            .send()
            .expect("GET")
    }

    /// GET that must succeed; returns the JSON body.
    pub fn get_json(&self, path_and_query: &str, token: &str) -> Value {
        let r = self.get(path_and_query, token);
        let status = r.status();
        let body = r.text().expect("body");
        assert!(status.is_success(), "GET {path_and_query}: {status} {body}");
        serde_json::from_str(&body).expect("JSON body")
    }

    pub fn post(&self, path: &str, token: &str, content_type: &str, body: Vec<u8>) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .expect("POST")
    }

    /// Sends NDJSON records to `/api/v1/ingest`; returns (status, JSON body).
    pub fn ingest(&self, token: &str, records: &[Value]) -> (u16, Value) {
        let mut body = Vec::new();
        for r in records {
            body.extend_from_slice(r.to_string().as_bytes());
            body.push(b'\n');
        }
        let r = self.post("/api/v1/ingest", token, "application/x-ndjson", body);
        let status = r.status().as_u16();
        (status, r.json().expect("JSON body"))
    }

    /// Every entry matching `query` (a query string without limit/cursor), walking all pages.
    pub fn search_all(&self, org: &str, query: &str, token: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = format!("/api/v1/orgs/{org}/audit-log?limit=1000");
            if !query.is_empty() {
                q.push('&');
                q.push_str(query);
            }
            if let Some(c) = &cursor {
                q.push_str("&cursor=");
                q.push_str(c);
            }
            let page = self.get_json(&q, token);
            out.extend(page["entries"].as_array().expect("entries").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }

    /// Waits until `query` matches exactly `n` records of `org` (asked through the facets route,
    /// which records no read). Panics after 20 s, naming the last count.
    pub fn wait_for_total(&self, org: &str, query: &str, token: &str, n: u64) {
        self.wait_for_total_within(org, query, token, n, Duration::from_secs(20));
    }

    /// [`Collector::wait_for_total`] with a deadline of `timeout`.
    pub fn wait_for_total_within(
        &self,
        org: &str,
        query: &str,
        token: &str,
        n: u64,
        timeout: Duration,
    ) {
        let deadline = Instant::now() + timeout;
        let mut last = 0;
        while !self.total_is(org, query, token, n, &mut last) {
            assert!(
                Instant::now() < deadline,
                "{query}: {last} records searchable after {timeout:?}, expected {n}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The number of records of `org` matching `query` now (through the facets route).
    pub fn total(&self, org: &str, query: &str, token: &str) -> u64 {
        let path = format!("/api/v1/orgs/{org}/audit-log/facets?{query}");
        self.get_json(&path, token)["total"].as_u64().unwrap_or(0)
    }

    fn total_is(&self, org: &str, query: &str, token: &str, n: u64, last: &mut u64) -> bool {
        *last = self.total(org, query, token);
        *last == n
    }

    /// SIGTERM, then wait for a clean exit; returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        let _ = child.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What varies between agents under test; everything else is fixed small for tests (fast
/// batches, fast retries, a short rescan interval, free ports).
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `[[sources.files]] include`: globs (absolute, or relative to the agent's directory).
    pub include: Vec<String>,
    /// `[[sources.files]] org_id`.
    pub org_id: String,
    /// `[[sources.files]] max_line_bytes` (the agent's default when `None`).
    pub max_line_bytes: Option<usize>,
    /// `spool.max_bytes`.
    pub spool_max_bytes: u64,
    /// `spool.segment_bytes`.
    pub spool_segment_bytes: u64,
    /// `batch.max_records`.
    pub batch_max_records: u32,
    /// `batch.max_wait`, a humantime duration.
    pub batch_max_wait: String,
    /// `retry.max_backoff`.
    pub retry_max_backoff: String,
    /// `discovery.rescan_interval`.
    pub rescan_interval: String,
    /// `log.level` (an env-filter directive).
    pub log_level: String,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            include: Vec::new(),
            org_id: "acme".into(),
            max_line_bytes: None,
            spool_max_bytes: 64 << 20,
            spool_segment_bytes: 1 << 20,
            batch_max_records: 500,
            batch_max_wait: "50ms".into(),
            retry_max_backoff: "500ms".into(),
            rescan_interval: "200ms".into(),
            log_level: "warn".into(),
        }
    }
}

/// A `codestax-agent` process under test, forwarding to a collector.
pub struct Agent {
    child: Option<Child>,
    /// The agent's directory: `agent.toml`, `agent.stderr`, `data/`.
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub otlp_grpc_port: u16,
    pub otlp_http_port: u16,
    pub api_port: u16,
    client: Client,
}

impl Agent {
    /// Writes a config in `dir` (free ports, `collector.endpoint` = `endpoint`, `collector.token`
    /// = `token`) and starts the agent; returns once its API answers.
    pub fn start(dir: &Path, endpoint: &str, token: &str, options: &AgentOptions) -> Agent {
        std::fs::create_dir_all(dir).expect("agent dir");
        let (otlp_grpc_port, otlp_http_port, api_port) = (free_port(), free_port(), free_port());
        let data_dir = dir.join("data");
        let config_path = dir.join("agent.toml");
        let include: Vec<String> = options.include.iter().map(|g| format!("{g:?}")).collect();
        let max_line = options
            .max_line_bytes
            .map_or(String::new(), |n| format!("max_line_bytes = {n}\n"));
        let config = format!(
            r#"data_dir = {data:?}
[collector]
endpoint = {endpoint:?}
token = {token:?}
[[sources.files]]
include = [{include}]
org_id = {org:?}
{max_line}[otlp]
grpc_listen = "127.0.0.1:{otlp_grpc_port}"
http_listen = "127.0.0.1:{otlp_http_port}"
[api]
listen = "127.0.0.1:{api_port}"
[spool]
max_bytes = {spool_max}
segment_bytes = {segment}
[batch]
max_records = {max_records}
max_wait = {max_wait:?}
[retry]
initial_backoff = "20ms"
max_backoff = {max_backoff:?}
[discovery]
rescan_interval = {rescan:?}
[log]
level = {log_level:?}
"#,
            data = data_dir.display().to_string(),
            include = include.join(", "),
            org = options.org_id,
            spool_max = options.spool_max_bytes,
            segment = options.spool_segment_bytes,
            max_records = options.batch_max_records,
            max_wait = options.batch_max_wait,
            max_backoff = options.retry_max_backoff,
            rescan = options.rescan_interval,
            log_level = options.log_level,
        );
        std::fs::write(&config_path, config).expect("write agent config");
        let mut agent = Agent {
            child: None,
            dir: dir.to_path_buf(),
            config_path,
            data_dir,
            otlp_grpc_port,
            otlp_http_port,
            api_port,
            client: Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.stderr"))
            .expect("agent stderr file");
        let child = Command::new(bin("codestax-agent"))
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start codestax-agent");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "codestax-agent exited during start: {status}\n{}",
                    self.stderr()
                );
            }
            // Any answer will do: /healthz says 503 while the spool is full.
            if self.client.get(self.api_url("/healthz")).send().is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "agent API not up within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same agent again (same config, data and ports) after a stop or kill.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill first");
        self.spawn();
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, then wait for the exit; returns whether it exited 0 (within 30 s).
    pub fn stop(&mut self) -> bool {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL: no chance to flush or persist anything.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        let _ = child.wait();
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api_port)
    }

    /// `http://127.0.0.1:PORT` of the OTLP/gRPC receiver.
    pub fn otlp_grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.otlp_grpc_port)
    }

    /// `http://127.0.0.1:PORT/v1/logs` of the OTLP/HTTP receiver.
    pub fn otlp_http_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/logs", self.otlp_http_port)
    }

    /// `/healthz`: (status, JSON body).
    pub fn health(&self) -> (u16, Value) {
        let r = self
            .client
            .get(self.api_url("/healthz"))
            .send()
            .expect("GET /healthz");
        (r.status().as_u16(), r.json().expect("healthz JSON"))
    }

    /// `/metrics` as text.
    pub fn metrics(&self) -> String {
        self.client
            .get(self.api_url("/metrics"))
            .send()
            .and_then(|r| r.text())
            .expect("GET /metrics")
    }

    /// The sum of every sample whose name (with labels) starts with `prefix`, e.g.
    /// `codestax_agent_records_spooled_total{source="file"}` or `codestax_agent_file_lag_bytes`.
    pub fn metric(&self, prefix: &str) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Every entry of the quarantine file (`data/quarantine/quarantine.jsonl`).
    pub fn quarantine(&self) -> Vec<Value> {
        let path = self.data_dir.join("quarantine/quarantine.jsonl");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("quarantine entry is JSON"))
            .collect()
    }

    /// What the agent wrote to stderr so far (all runs).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.stderr")).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A valid record of `org` with id `id`, at `time` (RFC 3339), by `email`.
pub fn record(org: &str, id: &str, action: &str, email: &str, time: &str) -> Value {
    serde_json::json!({
        "id": id,
        "org_id": org,
        "time": time,
        "actor": {"id": email, "name": "Test User", "email": email, "kind": "user"},
        "action": action,
        "target": {"kind": "repository", "id": "r-1", "name": "acme/api"},
        "repository": "acme/api",
        "metadata": {"ip": "203.0.113.7"}
    })
}
