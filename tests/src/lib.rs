//! Harness for end-to-end tests over the real binaries: start a collector on free ports and a
//! temporary data dir, create keys with its CLI, talk to it over HTTP, stop or kill it.
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
    client: Client,
}

impl Collector {
    /// Starts a collector on `data_dir` with fresh ports and waits until it is ready.
    /// `extra_toml` is appended to the generated config.
    pub fn start(data_dir: &Path, extra_toml: &str) -> Collector {
        let http_port = free_port();
        let grpc_port = free_port();
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

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
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
        let deadline = Instant::now() + Duration::from_secs(20);
        let path = format!("/api/v1/orgs/{org}/audit-log/facets?{query}");
        loop {
            let total = self.get_json(&path, token)["total"].as_u64().unwrap_or(0);
            if total == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{query}: {total} records searchable after 20 s, expected {n}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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
