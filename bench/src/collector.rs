//! The real collector binary as a child process: a temp data dir, free ports, keys made with its
//! own CLI before it starts, HTTP clients, `/metrics` figures and the process's peak RSS.
//!
//! The child gets `PR_SET_PDEATHSIG`, so it dies with the bench even when the bench is killed.

use crate::error::{BenchError, Result};
use reqwest::blocking::Client;
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The keys of one org: one to send records, one to read them.
#[derive(Debug, Clone)]
pub struct OrgKeys {
    pub ingest: String,
    pub reader: String,
}

/// A running collector.
pub struct Collector {
    child: Option<Child>,
    bin: PathBuf,
    config_path: PathBuf,
    pub data_dir: PathBuf,
    pub http_port: u16,
    pub grpc_port: u16,
    /// `metrics.listen`'s port (the API port has no `/metrics`).
    pub metrics_port: u16,
    keys: HashMap<String, OrgKeys>,
    client: Client,
}

/// A port free on 127.0.0.1 now.
pub fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BenchError::io("find a free port", "127.0.0.1:0", e))
}

/// An HTTP client for the bench's requests: keep-alive, generous timeout.
pub fn http_client() -> Result<Client> {
    Client::builder()
        .timeout(Duration::from_secs(300))
        .pool_max_idle_per_host(4)
        .build()
        .map_err(|e| BenchError::http("client", e))
}

/// Makes a child die (with `signal`) when the bench process does.
pub fn die_with_parent(cmd: &mut Command, signal: libc::c_int) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the calling (child) process.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl Collector {
    /// Writes a config for `data_dir` (`extra_toml` appended), creates an INGEST and an ORG_ADMIN
    /// key for every org with `keys create`, starts the binary and waits until it is ready.
    pub fn start(bin: &Path, data_dir: &Path, orgs: &[String], extra_toml: &str) -> Result<Self> {
        if !bin.exists() {
            return Err(BenchError::Collector(format!(
                "{} not found; build it first: cargo build --release -p codestax-collector -p codestax-bench",
                bin.display()
            )));
        }
        std::fs::create_dir_all(data_dir)
            .map_err(|e| BenchError::io("create the data dir", data_dir, e))?;
        let http_port = free_port()?;
        let grpc_port = free_port()?;
        let metrics_port = free_port()?;
        let mut c = Collector {
            child: None,
            bin: bin.to_path_buf(),
            config_path: data_dir.join("bench-collector.toml"),
            data_dir: data_dir.join("collector"),
            http_port,
            grpc_port,
            metrics_port,
            keys: HashMap::new(),
            client: http_client()?,
        };
        c.write_config(extra_toml)?;
        for org in orgs {
            let ingest = create_key(bin, &c.config_path, org, "INGEST")?;
            let reader = create_key(bin, &c.config_path, org, "ORG_ADMIN")?;
            c.keys.insert(org.clone(), OrgKeys { ingest, reader });
        }
        c.spawn()?;
        Ok(c)
    }

    /// Stops the collector (SIGTERM, as [`Collector::stop`]) and starts it again on the same data
    /// dir, ports and keys, with `extra_toml` in place of the config's earlier extra part: a
    /// config change as an operator makes it.
    pub fn restart(&mut self, extra_toml: &str) -> Result<()> {
        self.terminate()?;
        self.write_config(extra_toml)?;
        self.spawn()
    }

    fn write_config(&self, extra_toml: &str) -> Result<()> {
        let config = format!(
            "data_dir = {data:?}\n[http]\nlisten = \"127.0.0.1:{http}\"\n[grpc]\nlisten = \"127.0.0.1:{grpc}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\nper_org = true\n[log]\nlevel = \"warn\"\n{extra_toml}\n",
            data = self.data_dir.display().to_string(),
            http = self.http_port,
            grpc = self.grpc_port,
            metrics = self.metrics_port,
        );
        std::fs::write(&self.config_path, config)
            .map_err(|e| BenchError::io("write the collector config", &self.config_path, e))
    }

    fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        die_with_parent(&mut cmd, libc::SIGKILL);
        let child = cmd.spawn().map_err(|source| BenchError::Spawn {
            program: self.bin.display().to_string(),
            source,
        })?;
        crate::cleanup::register_child(child.id());
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(BenchError::Collector(format!(
                    "the collector exited during start: {status}"
                )));
            }
            if let Ok(r) = self.client.get(self.url("/readyz")).send()
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BenchError::Collector(
                    "the collector was not ready within 120 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    pub fn keys(&self, org: &str) -> &OrgKeys {
        &self.keys[org]
    }

    /// The `/metrics` text (per-org series on: the bench reports retention per org).
    pub fn metrics(&self) -> Result<String> {
        let r = self
            .client
            .get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .send()
            .map_err(|e| BenchError::http("GET /metrics", e))?;
        r.text().map_err(|e| BenchError::http("GET /metrics", e))
    }

    /// The value of an unlabelled metric (`codestax_collector_wal_fsyncs`).
    pub fn metric(&self, name: &str) -> Result<f64> {
        let text = self.metrics()?;
        metric_value(&text, name)
            .ok_or_else(|| BenchError::Collector(format!("/metrics has no {name}")))
    }

    /// Peak resident set size of the collector, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> Result<u64> {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// CPU time the collector has used since it started (user + system, all threads, exited
    /// ones included), from `/proc/PID/stat`.
    pub fn cpu_seconds(&self) -> Result<f64> {
        process_cpu_seconds(self.pid())
    }

    /// Waits until the collector is idle, using under 5% of a core over a second (its
    /// background merges are done), or `limit` has passed; returns how long it waited.
    pub fn wait_idle(&self, limit: Duration) -> Result<Duration> {
        let started = Instant::now();
        let mut before = self.cpu_seconds()?;
        while started.elapsed() < limit {
            std::thread::sleep(Duration::from_secs(1));
            let now = self.cpu_seconds()?;
            if now - before < 0.05 {
                break;
            }
            before = now;
        }
        Ok(started.elapsed())
    }

    /// Resets the peak RSS to the current RSS (`echo 5 > /proc/PID/clear_refs`).
    pub fn reset_peak_rss(&self) -> Result<()> {
        let path = format!("/proc/{}/clear_refs", self.pid());
        std::fs::write(&path, "5").map_err(|e| BenchError::io("reset the peak RSS", path, e))
    }

    /// Waits until the index holds at least `n` records (`codestax_collector_index_documents`).
    pub fn wait_indexed(&self, n: u64, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let docs = self.metric("codestax_collector_index_documents")? as u64;
            if docs >= n {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                return Err(BenchError::Collector(format!(
                    "only {docs} of {n} records indexed after {timeout:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM, then waits up to 120 s for the exit.
    pub fn stop(mut self) -> Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        crate::cleanup::forget_child(child.id());
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return if status.success() {
                    Ok(())
                } else {
                    Err(BenchError::Collector(format!(
                        "the collector exited with {status} on SIGTERM"
                    )))
                };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BenchError::Collector(
                    "the collector did not stop within 120 s of SIGTERM; killed".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::cleanup::forget_child(c.id());
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn create_key(bin: &Path, config: &Path, org: &str, role: &str) -> Result<String> {
    let out = Command::new(bin)
        .args(["keys", "create", "--org", org, "--role", role, "--config"])
        .arg(config)
        .output()
        .map_err(|source| BenchError::Spawn {
            program: format!("{} keys create", bin.display()),
            source,
        })?;
    if !out.status.success() {
        return Err(BenchError::Collector(format!(
            "keys create --org {org} --role {role} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The value of metric `name` (no labels) in a Prometheus text exposition.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Every series of metric `name` in a Prometheus text exposition: its labels as written between
/// the braces (`org="acme"`, empty without labels) and its value.
pub fn metric_series(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let labels = match series.strip_prefix(name)? {
                "" => "",
                rest => rest.strip_prefix('{')?.strip_suffix('}')?,
            };
            Some((labels.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// The memory lines of `/proc/PID/status`, in KiB. `VmRSS` = `RssAnon` (heap, stacks) +
/// `RssFile` (mapped files resident: for the collector mostly the index's mmapped files, which
/// the kernel can drop at will) + `RssShmem`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub vm_rss: u64,
    pub vm_hwm: u64,
    pub rss_anon: u64,
    pub rss_file: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Result<Memory> {
        let path = format!("/proc/{pid}/status");
        let text =
            std::fs::read_to_string(&path).map_err(|e| BenchError::io("read", path.clone(), e))?;
        let kib = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| BenchError::Collector(format!("{path} has no {key}")))
        };
        Ok(Memory {
            vm_rss: kib("VmRSS:")?,
            vm_hwm: kib("VmHWM:")?,
            rss_anon: kib("RssAnon:")?,
            rss_file: kib("RssFile:")?,
        })
    }
}

/// Samples a process's memory every 50 ms on a thread until [`MemorySampler::finish`], which
/// returns the largest `VmRSS` and the largest `RssAnon` seen (each at its own moment).
pub struct MemorySampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<Memory>,
}

impl MemorySampler {
    pub fn start(pid: u32) -> MemorySampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handle = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut max = Memory::default();
                loop {
                    if let Ok(m) = Memory::of(pid) {
                        max.vm_rss = max.vm_rss.max(m.vm_rss);
                        max.vm_hwm = max.vm_hwm.max(m.vm_hwm);
                        max.rss_anon = max.rss_anon.max(m.rss_anon);
                        max.rss_file = max.rss_file.max(m.rss_file);
                    }
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return max;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        MemorySampler { stop, handle }
    }

    /// The maxima of each line over the samples.
    pub fn finish(self) -> Memory {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// A `kB` line of `/proc/PID/status`, in KiB.
pub fn proc_status_kib(pid: u32, key: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text =
        std::fs::read_to_string(&path).map_err(|e| BenchError::io("read", path.clone(), e))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| BenchError::Collector(format!("{path} has no {key}")))
}

/// CPU seconds (user + system) of process `pid`, from `/proc/PID/stat`.
pub fn process_cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text =
        std::fs::read_to_string(&path).map_err(|e| BenchError::io("read", path.clone(), e))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        return Err(BenchError::Collector(format!("cannot parse {path}")));
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((user + system) / hz)
}

/// Bytes of the files under `dir`, recursively (their sizes, as `du --apparent-size`).
pub fn dir_bytes(dir: &Path) -> u64 {
    dir_usage(dir).0
}

/// Bytes under `dir`, recursively: the files' sizes, and the disk blocks allocated to the files
/// and directories (as `du`).
pub fn dir_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    let own = std::fs::metadata(dir).map_or(0, |m| m.blocks() * 512);
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_usage(&e.path()),
            Ok(m) => (m.len(), m.blocks() * 512),
            Err(_) => (0, 0),
        })
        .fold((0, own), |(a, b), (c, d)| (a + c, b + d))
}

#[cfg(test)]
mod tests {
    #[test]
    fn metric_values() {
        let text = "# HELP x\ncodestax_collector_wal_fsyncs 42\ncodestax_collector_wal_fsyncs_total{a=\"b\"} 1\n";
        assert_eq!(
            super::metric_value(text, "codestax_collector_wal_fsyncs"),
            Some(42.0)
        );
        assert_eq!(super::metric_value(text, "nope"), None);
        let text =
            "# TYPE x counter\nx_total{org=\"a\"} 3\nx_total{org=\"b\"} 4\nx_total_more 9\ny 1\n";
        assert_eq!(
            super::metric_series(text, "x_total"),
            vec![
                ("org=\"a\"".to_string(), 3.0),
                ("org=\"b\"".to_string(), 4.0)
            ]
        );
        assert_eq!(super::metric_series(text, "y"), vec![(String::new(), 1.0)]);
    }
}
