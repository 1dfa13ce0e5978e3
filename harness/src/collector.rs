//! A `codestax-collector` process: a config written for a data dir and free ports, keys made
//! with its own CLI, readiness on `/readyz`, HTTP helpers for the tests, stop and kill.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use serde_json::Value;

use crate::{HarnessError, Process, bin, proc_status_kib, try_free_port};

/// How long [`Collector::get_served`] asks again while a read answers 503.
const SERVED_PATIENCE: Duration = Duration::from_secs(15);

/// The config lines the tests add after the listeners: quick commits, a small writer.
const TEST_SETTINGS: &str =
    "[index]\ncommit_interval = \"200ms\"\nwriter_memory_bytes = 50000000\n";

/// How to run a collector; [`CollectorOptions::for_tests`] is what [`Collector::start`] uses.
#[derive(Debug, Clone)]
pub struct CollectorOptions {
    /// The `codestax-collector` binary.
    pub bin: PathBuf,
    /// `data_dir`.
    pub data_dir: PathBuf,
    /// Where the generated config is written.
    pub config_path: PathBuf,
    /// TOML after `data_dir` and the listeners (`metrics.listen` comes from the environment,
    /// so this may hold a `[metrics]` table).
    pub settings: String,
    /// How long the first `/readyz` may take.
    pub ready_timeout: Duration,
    /// How long a stop may take after SIGTERM.
    pub stop_timeout: Duration,
    /// HTTP request timeout.
    pub request_timeout: Duration,
    /// Applied to the command before each start (the bench makes its children die with it).
    pub before_spawn: Option<fn(&mut Command)>,
    /// A file every start appends its stderr to (read back with [`Collector::stderr`]); the
    /// test's own stderr when `None`.
    pub stderr: Option<PathBuf>,
}

impl CollectorOptions {
    /// The workspace's binary on `data_dir`, the config beside it (`data_dir.toml`), quick index
    /// commits, then `extra_toml`.
    pub fn for_tests(data_dir: &Path, extra_toml: &str) -> CollectorOptions {
        CollectorOptions {
            bin: bin("codestax-collector"),
            data_dir: data_dir.to_path_buf(),
            config_path: data_dir.with_extension("toml"),
            settings: format!("{TEST_SETTINGS}{extra_toml}"),
            ready_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            before_spawn: None,
            stderr: None,
        }
    }
}

/// A collector process under test.
pub struct Collector {
    process: Process,
    options: CollectorOptions,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub http_port: u16,
    pub grpc_port: u16,
    /// `metrics.listen`'s port, given by environment variable, so the settings may hold a
    /// `[metrics]` table of their own.
    pub metrics_port: u16,
    client: Client,
}

impl Collector {
    /// Starts a collector on `data_dir` with fresh ports and waits until it is ready.
    /// `extra_toml` is appended to the generated config. Panics if it cannot.
    pub fn start(data_dir: &Path, extra_toml: &str) -> Collector {
        let mut c = Collector::configure(CollectorOptions::for_tests(data_dir, extra_toml))
            .unwrap_or_else(|e| panic!("{e}"));
        c.launch().unwrap_or_else(|e| panic!("{e}"));
        c
    }

    /// Picks free ports and writes the config; starts nothing (keys can be made first with
    /// [`Collector::new_key`]).
    pub fn configure(options: CollectorOptions) -> Result<Collector, HarnessError> {
        let port = || {
            try_free_port().map_err(|source| HarnessError::Io {
                what: "find a free port on",
                path: "127.0.0.1:0".into(),
                source,
            })
        };
        let client = Client::builder()
            .timeout(options.request_timeout)
            .pool_max_idle_per_host(4)
            .build()
            .map_err(|source| HarnessError::Http {
                what: "build an HTTP client".into(),
                source,
            })?;
        let c = Collector {
            process: Process::none("codestax-collector"),
            data_dir: options.data_dir.clone(),
            config_path: options.config_path.clone(),
            http_port: port()?,
            grpc_port: port()?,
            metrics_port: port()?,
            client,
            options,
        };
        c.write_config()?;
        Ok(c)
    }

    fn write_config(&self) -> Result<(), HarnessError> {
        let config = format!(
            "data_dir = {data:?}\n[http]\nlisten = \"127.0.0.1:{http}\"\n[grpc]\nlisten = \"127.0.0.1:{grpc}\"\n{settings}\n",
            data = self.data_dir.display().to_string(),
            http = self.http_port,
            grpc = self.grpc_port,
            settings = self.options.settings,
        );
        std::fs::write(&self.config_path, config).map_err(|source| HarnessError::Io {
            what: "write the collector config",
            path: self.config_path.clone(),
            source,
        })
    }

    /// Starts the process and waits until `/readyz` says ready.
    pub fn launch(&mut self) -> Result<(), HarnessError> {
        let mut cmd = Command::new(&self.options.bin);
        cmd.arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", "warn")
            .env(
                "CODESTAX_COLLECTOR__METRICS__LISTEN",
                format!("127.0.0.1:{}", self.metrics_port),
            )
            .stdin(Stdio::null());
        if let Some(path) = &self.options.stderr {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| HarnessError::Io {
                    what: "open the stderr file",
                    path: path.clone(),
                    source,
                })?;
            cmd.stderr(file);
        }
        if let Some(before_spawn) = self.options.before_spawn {
            before_spawn(&mut cmd);
        }
        self.process.respawn(&mut cmd)?;
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let timeout = self.options.ready_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.exited() {
                // Its last words, when they went to a file (else they are on the test's stderr).
                let said = self.stderr();
                let tail: Vec<&str> = said.lines().rev().take(20).collect();
                let detail = if tail.is_empty() {
                    String::new()
                } else {
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    format!("\n{}", tail.join("\n"))
                };
                return Err(HarnessError::ExitedDuringStart {
                    program: self.process.program().to_string(),
                    status,
                    detail,
                });
            }
            if let Ok(r) = self.client.get(self.url("/readyz")).send()
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    program: self.process.program().to_string(),
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the same collector again (same data dir and ports) after a stop or kill.
    pub fn restart(&mut self) {
        assert!(self.process.pid().is_none(), "stop or kill first");
        self.launch().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Stops it (SIGTERM), rewrites the config with `settings` in place of the earlier ones
    /// (a config change as an operator makes it) and starts it again.
    pub fn restart_with(&mut self, settings: &str) -> Result<(), HarnessError> {
        self.terminate()?;
        self.set_settings(settings)?;
        self.launch()
    }

    /// Rewrites the config with `settings` in place of the earlier ones, for the next start
    /// (a cluster node's settings name its HTTP port, known once configured).
    pub fn set_settings(&mut self, settings: &str) -> Result<(), HarnessError> {
        self.options.settings = settings.to_string();
        self.write_config()
    }

    /// What the collector wrote to [`CollectorOptions::stderr`] so far (all runs); empty when
    /// its stderr is not kept in a file.
    pub fn stderr(&self) -> String {
        self.options
            .stderr
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// A `/proc/PID/status` memory figure of the running process (`VmRSS`, `VmHWM`), in KiB.
    pub fn memory_kib(&self, field: &str) -> u64 {
        let pid = self.pid().expect("collector running");
        proc_status_kib(pid, &format!("{field}:")).unwrap_or_else(|e| panic!("{e}"))
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
    pub fn try_metrics(&self) -> Result<String, HarnessError> {
        let http = |source| HarnessError::Http {
            what: "GET /metrics".into(),
            source,
        };
        self.client
            .get(self.metrics_url("/metrics"))
            .send()
            .and_then(Response::error_for_status)
            .map_err(http)?
            .text()
            .map_err(http)
    }

    /// The Prometheus text of the metrics listener; panics if it does not answer 200.
    pub fn metrics(&self) -> String {
        self.try_metrics().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The sum of the samples whose name and labels start with `prefix` ([`crate::metric_sum`]).
    pub fn metric(&self, prefix: &str) -> f64 {
        crate::metric_sum(&self.metrics(), prefix)
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// Creates a key with the collector's own CLI (`keys create`) and returns the token; works
    /// whether or not the collector runs (a running one takes it up within a second).
    pub fn new_key(&self, org: &str, role: &str) -> Result<String, HarnessError> {
        let command = format!("codestax-collector keys create --org {org} --role {role}");
        let mut cmd = Command::new(&self.options.bin);
        cmd.args(["keys", "create", "--org", org, "--role", role, "--config"])
            .arg(&self.config_path);
        // The environment the collector gets (cluster mode: the metastore's password).
        if let Some(before_spawn) = self.options.before_spawn {
            before_spawn(&mut cmd);
        }
        // The hook may silence the collector's own output (the bench does); the token is read here.
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = cmd.output().map_err(|source| HarnessError::Spawn {
            program: command.clone(),
            source,
        })?;
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || token.is_empty() || token.contains(char::is_whitespace) {
            return Err(HarnessError::Command {
                command,
                stderr: format!(
                    "{}; stdout {token:?}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(token)
    }

    /// [`Collector::new_key`] on the running collector; returns once the collector accepts it.
    pub fn create_key(&self, org: &str, role: &str) -> String {
        let token = self.new_key(org, role).unwrap_or_else(|e| panic!("{e}"));
        let accepted = crate::wait_for(Duration::from_secs(5), || {
            let r = self.get(&format!("/api/v1/orgs/{org}/audit-log/__probe__"), &token);
            r.status() != 401
        });
        assert!(
            accepted,
            "the collector did not accept the new key within 5 s"
        );
        token
    }

    pub fn get(&self, path_and_query: &str, token: &str) -> Response {
        self.client
            .get(self.url(path_and_query))
            .bearer_auth(token)
            .send()
            .expect("GET")
    }

    /// GET, asked again while the answer is a 503 with `Retry-After` (a cluster shard between
    /// owners: a lease lost under load is taken again within seconds), for up to
    /// `SERVED_PATIENCE`; the last answer.
    pub fn get_served(&self, path_and_query: &str, token: &str) -> Response {
        let mut last = None;
        crate::wait_for(SERVED_PATIENCE, || {
            let r = self.get(path_and_query, token);
            let retry = r.status() == 503 && r.headers().contains_key("retry-after");
            last = Some(r);
            !retry
        });
        last.expect("asked at least once")
    }

    /// GET that must succeed ([`Collector::get_served`]); returns the JSON body.
    pub fn get_json(&self, path_and_query: &str, token: &str) -> Value {
        let r = self.get_served(path_and_query, token);
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
        let mut last = 0;
        let reached = crate::wait_for(timeout, || {
            // A 503 (not ready; in a cluster, the org's shard between owners) is "not yet".
            let r = self.get(
                &format!("/api/v1/orgs/{org}/audit-log/facets?{query}"),
                token,
            );
            if r.status() == 503 {
                return false;
            }
            let status = r.status();
            let body: Value = r.json().expect("JSON body");
            assert!(status.is_success(), "facets of {org}: {status} {body}");
            last = body["total"].as_u64().unwrap_or(0);
            last == n
        });
        assert!(
            reached,
            "{query}: {last} records searchable after {timeout:?}, expected {n}"
        );
    }

    /// The number of records of `org` matching `query` now (through the facets route).
    pub fn total(&self, org: &str, query: &str, token: &str) -> u64 {
        let path = format!("/api/v1/orgs/{org}/audit-log/facets?{query}");
        self.get_json(&path, token)["total"].as_u64().unwrap_or(0)
    }

    /// [`Collector::total`], or `None` while the read is refused with 503 (a cluster shard not
    /// served yet, or failing over); any other failure panics as there.
    pub fn total_when_served(&self, org: &str, query: &str, token: &str) -> Option<u64> {
        let path = format!("/api/v1/orgs/{org}/audit-log/facets?{query}");
        let r = self.get(&path, token);
        if r.status().as_u16() == 503 {
            return None;
        }
        let status = r.status();
        let body = r.text().expect("body");
        assert!(status.is_success(), "GET {path}: {status} {body}");
        let body: Value = serde_json::from_str(&body).expect("JSON body");
        Some(body["total"].as_u64().unwrap_or(0))
    }

    /// SIGTERM, then wait for a clean exit; returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        assert!(self.process.pid().is_some(), "running");
        self.terminate().is_ok()
    }

    /// SIGTERM, then wait for the exit (killing it after the stop timeout); an exit other than
    /// 0 is an error. Nothing to do if it is not running.
    pub fn terminate(&mut self) -> Result<(), HarnessError> {
        self.process.terminate(self.options.stop_timeout)
    }

    /// Sends `signal` (a `kill -s` name) to the running process: `STOP` and `CONT` pause and
    /// resume it, as a host that hangs and comes back.
    pub fn signal(&self, signal: &str) {
        assert!(self.process.pid().is_some(), "running");
        self.process.signal(signal);
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        assert!(self.process.pid().is_some(), "running");
        self.process.kill9();
    }
}
