//! A `codestax-agent` process: a config for a directory and free ports, forwarding to a
//! collector (or an in-test sink); readiness on its API, health, metrics, quarantine, stop, kill.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::Value;

use crate::{Process, bin, free_port};

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
    /// `[[sources.files]] fingerprint_bytes` (the agent's default when `None`).
    pub fingerprint_bytes: Option<u64>,
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
    /// The binary; the workspace's `codestax-agent`, built for the tests, when `None` (the
    /// agent's own tests pass `CARGO_BIN_EXE_codestax-agent`).
    pub bin: Option<PathBuf>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            include: Vec::new(),
            org_id: "acme".into(),
            max_line_bytes: None,
            fingerprint_bytes: None,
            spool_max_bytes: 64 << 20,
            spool_segment_bytes: 1 << 20,
            batch_max_records: 500,
            batch_max_wait: "50ms".into(),
            retry_max_backoff: "500ms".into(),
            rescan_interval: "200ms".into(),
            log_level: "warn".into(),
            bin: None,
        }
    }
}

/// A `codestax-agent` process under test, forwarding to a collector.
pub struct Agent {
    process: Process,
    bin: PathBuf,
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
        let mut source_extra = String::new();
        if let Some(n) = options.max_line_bytes {
            source_extra.push_str(&format!("max_line_bytes = {n}\n"));
        }
        if let Some(n) = options.fingerprint_bytes {
            source_extra.push_str(&format!("fingerprint_bytes = {n}\n"));
        }
        let config = format!(
            r#"data_dir = {data:?}
[collector]
endpoint = {endpoint:?}
token = {token:?}
[[sources.files]]
include = [{include}]
org_id = {org:?}
{source_extra}[otlp]
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
            process: Process::none("codestax-agent"),
            bin: options.bin.clone().unwrap_or_else(|| bin("codestax-agent")),
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
        self.respawn();
        self.wait_up();
    }

    /// Starts the same agent again after a stop or kill without waiting for its API, so what
    /// comes next races its start-up.
    pub fn respawn(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.stderr"))
            .expect("agent stderr file");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        self.process
            .respawn(&mut cmd)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn wait_up(&mut self) {
        let (health, client, process) = (self.api_url("/healthz"), &self.client, &mut self.process);
        let mut exited = None;
        // Any answer will do: /healthz says 503 while the spool is full.
        let up = crate::wait_for(Duration::from_secs(30), || {
            exited = process.exited();
            exited.is_some() || client.get(&health).send().is_ok()
        });
        if let Some(status) = exited {
            panic!(
                "codestax-agent exited during start: {status}\n{}",
                self.stderr()
            );
        }
        assert!(up, "agent API not up within 30 s\n{}", self.stderr());
    }

    /// Starts the same agent again (same config, data and ports) after a stop or kill.
    pub fn restart(&mut self) {
        assert!(self.process.pid().is_none(), "stop or kill first");
        self.spawn();
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// SIGTERM, then wait for the exit; returns whether it exited 0 (within 30 s).
    pub fn stop(&mut self) -> bool {
        assert!(self.process.pid().is_some(), "running");
        self.process.terminate(Duration::from_secs(30)).is_ok()
    }

    /// SIGKILL: no chance to flush or persist anything.
    pub fn kill9(&mut self) {
        assert!(self.process.pid().is_some(), "running");
        self.process.kill9();
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
        crate::metric_sum(&self.metrics(), prefix)
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
