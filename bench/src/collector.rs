//! The real collector binary as a child process, through the workspace harness
//! (`codestax-harness`): a temp data dir, free ports, keys made with its own CLI before it starts,
//! `/metrics` figures and the process's memory and CPU.
//!
//! The child gets `PR_SET_PDEATHSIG`, so it dies with the bench even when the bench is killed.

use crate::error::{BenchError, Result};
use codestax_harness::CollectorOptions;
use reqwest::blocking::Client;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The keys of one org: one to send records, one to read them.
#[derive(Debug, Clone)]
pub struct OrgKeys {
    pub ingest: String,
    pub reader: String,
}

/// A running collector.
pub struct Collector {
    inner: codestax_harness::Collector,
    /// The collector's `data_dir`.
    pub data_dir: std::path::PathBuf,
    keys: HashMap<String, OrgKeys>,
}

/// The bench's settings after the listeners: per-org series (the bench reports retention per
/// org) and quiet logs.
const BENCH_SETTINGS: &str = "[metrics]\nper_org = true\n[log]\nlevel = \"warn\"\n";

/// How [`Collector::start_with`] starts a collector.
pub struct Launch<'a> {
    /// Orgs to make keys for (unless `keys` are given).
    pub orgs: &'a [String],
    /// The TOML after the bench's own settings, given the collector's HTTP port (a cluster
    /// node advertises it).
    pub settings: &'a dyn Fn(u16) -> String,
    /// Applied to the collector's command and to its CLI's: [`bench_child`], and what else
    /// they need (cluster mode: the metastore's password).
    pub before_spawn: fn(&mut Command),
    /// Keys already made (a cluster's, in its metastore): none are made.
    pub keys: Option<HashMap<String, OrgKeys>>,
    /// A file the collector's stderr goes to (the bench's own stderr otherwise).
    pub stderr: Option<std::path::PathBuf>,
}

/// What every collector child of the bench gets: no stdout, and death with the bench.
pub fn bench_child(cmd: &mut Command) {
    cmd.stdout(std::process::Stdio::null());
    die_with_parent(cmd, libc::SIGKILL);
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
#[allow(unsafe_code)]
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
        Collector::start_with(
            bin,
            data_dir,
            Launch {
                orgs,
                settings: &|_| extra_toml.to_string(),
                before_spawn: bench_child,
                keys: None,
                stderr: None,
            },
        )
    }

    /// [`Collector::start`] as `launch` says.
    pub fn start_with(bin: &Path, data_dir: &Path, launch: Launch<'_>) -> Result<Self> {
        if !bin.exists() {
            return Err(BenchError::Collector(format!(
                "{} not found; build it first: cargo build --release -p codestax-collector -p codestax-bench",
                bin.display()
            )));
        }
        std::fs::create_dir_all(data_dir)
            .map_err(|e| BenchError::io("create the data dir", data_dir, e))?;
        let mut inner = codestax_harness::Collector::configure(CollectorOptions {
            bin: bin.to_path_buf(),
            data_dir: data_dir.join("collector"),
            config_path: data_dir.join("bench-collector.toml"),
            settings: String::new(),
            ready_timeout: Duration::from_secs(120),
            stop_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(300),
            before_spawn: Some(launch.before_spawn),
            stderr: launch.stderr,
        })?;
        let extra_toml = (launch.settings)(inner.http_port);
        inner.set_settings(&format!("{BENCH_SETTINGS}{extra_toml}"))?;
        let keys = match launch.keys {
            Some(keys) => keys,
            None => {
                let mut keys = HashMap::new();
                for org in launch.orgs {
                    let ingest = inner.new_key(org, "INGEST")?;
                    let reader = inner.new_key(org, "ORG_ADMIN")?;
                    keys.insert(org.clone(), OrgKeys { ingest, reader });
                }
                keys
            }
        };
        inner.launch()?;
        let c = Collector {
            data_dir: inner.data_dir.clone(),
            inner,
            keys,
        };
        crate::cleanup::register_child(c.pid());
        Ok(c)
    }

    /// Stops the collector (SIGTERM, as [`Collector::stop`]) and starts it again on the same data
    /// dir, ports and keys, with `extra_toml` in place of the config's earlier extra part: a
    /// config change as an operator makes it.
    pub fn restart(&mut self, extra_toml: &str) -> Result<()> {
        crate::cleanup::forget_child(self.pid());
        self.inner
            .restart_with(&format!("{BENCH_SETTINGS}{extra_toml}"))?;
        crate::cleanup::register_child(self.pid());
        Ok(())
    }

    /// Creates one more key for `org` with the collector's CLI while it runs; returns once the
    /// collector accepts it.
    pub fn new_key(&self, org: &str, role: &str) -> Result<String> {
        let token = self.inner.new_key(org, role)?;
        let client = http_client()?;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            let r = client
                .get(self.url(&format!("/api/v1/orgs/{org}/streams")))
                .bearer_auth(&token)
                .send();
            if r.is_ok_and(|r| r.status() != 401) {
                return Ok(token);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(BenchError::Collector(format!(
            "the collector did not accept a new {role} key for {org} within 10 s"
        )))
    }

    pub fn pid(&self) -> u32 {
        self.inner.pid().unwrap_or(0)
    }

    pub fn url(&self, path: &str) -> String {
        self.inner.url(path)
    }

    pub fn grpc_endpoint(&self) -> String {
        self.inner.grpc_endpoint()
    }

    pub fn keys(&self, org: &str) -> &OrgKeys {
        &self.keys[org]
    }

    /// Every org's keys (for another node of the same cluster).
    pub fn all_keys(&self) -> &HashMap<String, OrgKeys> {
        &self.keys
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        crate::cleanup::forget_child(self.pid());
        self.inner.kill9();
    }

    /// The `/metrics` text (per-org series on: the bench reports retention per org).
    pub fn metrics(&self) -> Result<String> {
        Ok(self.inner.try_metrics()?)
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

    /// CPU seconds of the collector's live index merge threads (tantivy's `merge_thread_*`).
    pub fn merge_threads_cpu(&self) -> Result<ThreadsCpu> {
        ThreadsCpu::of(self.pid(), "merge_thread")
    }

    /// CPU seconds of the collector's live async runtime threads (tokio's workers and blocking
    /// threads: HTTP requests, ingest, stream delivery).
    pub fn runtime_threads_cpu(&self) -> Result<ThreadsCpu> {
        ThreadsCpu::of(self.pid(), "tokio-")
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
        crate::cleanup::forget_child(self.pid());
        Ok(self.inner.terminate()?)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        // The harness kills a collector still running when it drops.
        crate::cleanup::forget_child(self.pid());
    }
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

/// The cumulative buckets of histogram `name` (`name_bucket{le="…"}`), by upper bound, `+Inf`
/// last: a snapshot to take [`Buckets::since`] an earlier one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets(pub Vec<(f64, f64)>);

impl Buckets {
    pub fn of(text: &str, name: &str) -> Buckets {
        let mut v: Vec<(f64, f64)> = metric_series(text, &format!("{name}_bucket"))
            .into_iter()
            .filter_map(|(labels, count)| {
                let le = labels.strip_prefix("le=\"")?.strip_suffix('"')?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count))
            })
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        Buckets(v)
    }

    /// What was observed after `earlier` (the same histogram, read before).
    pub fn since(&self, earlier: &Buckets) -> Buckets {
        Buckets(
            self.0
                .iter()
                .map(|&(le, n)| {
                    let before = earlier
                        .0
                        .iter()
                        .find(|(l, _)| *l == le)
                        .map_or(0.0, |b| b.1);
                    (le, n - before)
                })
                .collect(),
        )
    }

    pub fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |b| b.1)
    }

    /// The upper bound of the bucket holding quantile `q`: the observations at `q` were at most
    /// this long. `None` when nothing was observed.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let rank = (q * self.count()).ceil().max(1.0);
        self.0.iter().find(|(_, n)| *n >= rank).map(|b| b.0)
    }
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
        Ok(Memory {
            vm_rss: proc_status_kib(pid, "VmRSS:")?,
            vm_hwm: proc_status_kib(pid, "VmHWM:")?,
            rss_anon: proc_status_kib(pid, "RssAnon:")?,
            rss_file: proc_status_kib(pid, "RssFile:")?,
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
    Ok(codestax_harness::proc_status_kib(pid, key)?)
}

/// CPU seconds (user + system) of process `pid`, from `/proc/PID/stat`.
pub fn process_cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text =
        std::fs::read_to_string(&path).map_err(|e| BenchError::io("read", path.clone(), e))?;
    codestax_harness::stat_cpu_seconds(&text)
        .ok_or_else(|| BenchError::Collector(format!("cannot parse {path}")))
}

/// CPU seconds of the live threads of a process whose names start with a prefix, by thread id:
/// what some of its threads used, apart from the rest ([`ThreadsCpu::since`]).
#[derive(Debug, Clone, Default)]
pub struct ThreadsCpu(HashMap<u32, f64>);

impl ThreadsCpu {
    /// The threads of `pid` named `prefix…` (`/proc/PID/task/*/comm`) now.
    pub fn of(pid: u32, prefix: &str) -> Result<ThreadsCpu> {
        let dir = format!("/proc/{pid}/task");
        let tasks = std::fs::read_dir(&dir).map_err(|e| BenchError::io("list", dir.clone(), e))?;
        let mut threads = HashMap::new();
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<u32>().ok())
            else {
                continue;
            };
            // A thread may end between the listing and the reads: skipped.
            let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else {
                continue;
            };
            if !comm.starts_with(prefix) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            if let Some(cpu) = codestax_harness::stat_cpu_seconds(&stat) {
                threads.insert(tid, cpu);
            }
        }
        Ok(ThreadsCpu(threads))
    }

    /// What these threads used since `earlier` (a thread new since then from zero). A thread
    /// that started and ended in between is not seen, so this is a lower bound.
    pub fn since(&self, earlier: &ThreadsCpu) -> f64 {
        self.0
            .iter()
            .map(|(tid, cpu)| cpu - earlier.0.get(tid).copied().unwrap_or(0.0))
            .sum()
    }
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

    #[test]
    fn histogram_buckets_give_quantile_bounds() {
        let text = |a, b, c| {
            format!(
                "# TYPE h histogram\nh_bucket{{le=\"0.1\"}} {a}\nh_bucket{{le=\"+Inf\"}} {c}\nh_bucket{{le=\"0.5\"}} {b}\nh_sum 1\nh_count {c}\n"
            )
        };
        let before = super::Buckets::of(&text(2, 3, 3), "h");
        assert_eq!(before.0.len(), 3);
        let after = super::Buckets::of(&text(50, 98, 100), "h");
        let d = after.since(&before);
        assert_eq!(d.count(), 97.0);
        // 48 at most 0.1, 95 at most 0.5, 97 in all.
        assert_eq!(d.quantile_bound(0.49), Some(0.1));
        assert_eq!(d.quantile_bound(0.5), Some(0.5));
        assert_eq!(d.quantile_bound(0.97), Some(0.5));
        assert_eq!(d.quantile_bound(0.99), Some(f64::INFINITY));
        assert_eq!(super::Buckets::default().quantile_bound(0.5), None);
    }

    #[test]
    fn a_named_threads_cpu_is_told_apart() {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spin = std::thread::Builder::new()
            .name("bench_spin_t".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                }
            })
            .unwrap();
        let pid = std::process::id();
        let before = super::ThreadsCpu::of(pid, "bench_spin").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let after = super::ThreadsCpu::of(pid, "bench_spin").unwrap();
        let none = super::ThreadsCpu::of(pid, "no_such_thread").unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        spin.join().unwrap();
        assert_eq!(after.0.len(), 1, "{after:?}");
        assert!(after.since(&before) > 0.0, "{before:?} {after:?}");
        assert!(none.0.is_empty());
    }
}
