//! The agent's benchmarks (issue 4), with rsyslog as the reference agent on the same files.
//!
//! `cargo bench -p codestax-agent --bench agent` (release build of the agent; the collector's
//! release binary is built too when missing). rsyslog (`rsyslogd`, with `imfile`) must be
//! installed for the reference rows, else they are skipped.
//!
//! Measured, each on a fresh data directory:
//! - tail throughput of ~500-byte JSON lines from one pre-written file to a sink that acks at
//!   once (a minimal OTLP/gRPC sink in this process), and to the real collector;
//! - RSS with 100 files watched and idle, peak RSS under full load (`VmRSS`/`VmHWM`);
//! - CPU at 10,000 records/s written to 10 files, from `/proc/<pid>/stat` (utime + stime);
//! - the same for rsyslog `imfile` → `omfwd` TCP to a counting listener.
//!
//! Set `BENCH_LINES` to change the throughput file's size (default 400,000 lines, ~200 MB);
//! `BENCH_AGENT_TOML` is appended to the agent's configuration (e.g. `[batch]` settings);
//! `BENCH_AGENT_BIN` runs another agent binary (e.g. one built from an earlier commit).

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use codestax_harness::wait_for;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use tonic::codec::CompressionEncoding;

const MIB: f64 = 1024.0 * 1024.0;

fn main() {
    // `cargo test --benches` runs this without `--bench`: nothing to do then.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("agent benchmarks: run with `cargo bench -p codestax-agent --bench agent`");
        return;
    }
    let lines: u64 = std::env::var("BENCH_LINES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400_000);
    // `BENCH_ONLY=parse`: the per-record hot paths in this process, no binaries needed.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only == "parse" {
        println!("{}", machine());
        hot_paths(lines);
        return;
    }
    let bins = Bins::locate();
    println!("{}", machine());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sink = runtime.block_on(AckSink::start());
    let rsyslog = Command::new("rsyslogd")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());

    let mut rows: Vec<Row> = Vec::new();
    let dir = tempfile::tempdir_in(bench_tmp()).unwrap();
    let big = dir.path().join("big");
    fs::create_dir_all(&big).unwrap();
    let bytes = write_lines(&big.join("app.jsonl"), 0, lines);
    println!(
        "throughput file: {lines} lines, {:.1} MiB, {:.0} bytes per line",
        bytes as f64 / MIB,
        bytes as f64 / lines as f64
    );

    // `BENCH_ONLY=sink,collector,rsyslog,idle,steady` runs some of them (e.g. under a profiler).
    let run = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    if run("sink") {
        rows.push(agent_throughput(&bins, &sink, &big, lines, bytes));
    }
    if run("collector") {
        rows.push(collector_throughput(&bins, &big, lines.min(100_000)));
    }
    if rsyslog && run("rsyslog") {
        rows.push(rsyslog_throughput(&big, lines, bytes));
    }
    fs::remove_dir_all(&big).unwrap();

    if run("idle") {
        rows.push(agent_idle(&bins, &sink));
        if rsyslog {
            rows.push(rsyslog_idle());
        }
    }
    if run("steady") {
        rows.push(agent_steady(&bins, &sink));
        if rsyslog {
            rows.push(rsyslog_steady());
        }
    }

    println!("\n| measurement | result | load (1/5/15 min) |\n|---|---|---|");
    for row in &rows {
        for (what, value) in &row.figures {
            println!("| {} — {what} | {value} | {} |", row.name, row.load);
        }
    }
}

/// The per-record hot paths, in this process: the file source's parse of an emit line, the
/// spool's protobuf encoding, the canonical JSON (size check, hash, stored form) and the OTLP
/// decode the collector does. Best of five passes over `lines` records, in ns per record.
fn hot_paths(lines: u64) {
    use codestax_agent::encoded::encode_record;
    use codestax_common::LineParser;
    use codestax_common::Rules;
    use codestax_common::otlp::record_from_log;
    use opentelemetry_proto::tonic::logs::v1::LogRecord;
    use prost::Message;

    let n = lines.min(200_000);
    let mut text = String::new();
    for i in 0..n {
        emit_line(&mut text, i);
    }
    let rules = Rules {
        max_record_bytes: usize::MAX,
        ..Rules::new()
    };
    let collector_rules = Rules::new();
    let mut parser = LineParser::default();
    let records: Vec<_> = text
        .lines()
        .map(|l| parser.parse(l.as_bytes(), None, &rules).unwrap().clone())
        .collect();
    let encoded: Vec<Vec<u8>> = records
        .iter()
        .map(|r| {
            let mut out = Vec::new();
            encode_record(r, &mut out);
            out
        })
        .collect();
    let best = |f: &mut dyn FnMut() -> usize| {
        (0..5)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(f());
                start.elapsed().as_nanos() as f64 / n as f64
            })
            .fold(f64::MAX, f64::min)
    };
    let parse = best(&mut || {
        text.lines()
            .map(|l| {
                parser
                    .parse(l.as_bytes(), None, &rules)
                    .unwrap()
                    .actor
                    .id
                    .len()
            })
            .sum()
    });
    let mut out = Vec::new();
    let encode = best(&mut || {
        records
            .iter()
            .map(|r| {
                out.clear();
                encode_record(r, &mut out);
                out.len()
            })
            .sum()
    });
    let canonical = best(&mut || records.iter().map(|r| r.canonical_json().len()).sum());
    let decode = best(&mut || {
        encoded
            .iter()
            .map(|bytes| {
                let log = LogRecord::decode(bytes.as_slice()).unwrap();
                record_from_log(&log, &[], None, &collector_rules)
                    .unwrap()
                    .action
                    .len()
            })
            .sum()
    });
    println!("\n| hot path ({n} records, best of 5) | ns per record |\n|---|---|");
    for (what, ns) in [
        ("parse an emit line (LineParser)", parse),
        ("encode for the spool (encode_record)", encode),
        ("canonical JSON", canonical),
        ("OTLP decode + record_from_log", decode),
    ] {
        println!("| {what} | {ns:.0} |");
    }
}

/// Where the throughput files go (`BENCH_TMP`, else the system temp dir).
fn bench_tmp() -> PathBuf {
    std::env::var_os("BENCH_TMP").map_or_else(std::env::temp_dir, PathBuf::from)
}

struct Row {
    name: &'static str,
    load: String,
    figures: Vec<(&'static str, String)>,
}

// ---------------------------------------------------------------------------------------------
// Machine, load, processes

fn machine() -> String {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("?".into(), |(_, m)| m.trim().to_string());
    let mem = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .map_or("?".into(), |l| {
            l.split_whitespace().nth(1).unwrap_or("?").to_string()
        });
    let run = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let dirty = if run("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " (uncommitted changes)"
    };
    format!(
        "machine: {} cores, {:.1} GiB, {cpu}, kernel {}\ndate: {}\ncommit: {}{dirty}\nuptime: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem.parse::<f64>().unwrap_or(0.0) / 1024.0 / 1024.0,
        read("/proc/sys/kernel/osrelease").trim(),
        run("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        run("git", &["rev-parse", "--short", "HEAD"]),
        run("uptime", &[]),
    )
}

fn load() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// CPU seconds (user + system, all threads) of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based, whole line).
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
    let total = ticks(14).unwrap_or(0) + ticks(15).unwrap_or(0);
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    total as f64 / hz
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A child process killed when dropped.
struct Proc(Child);

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], codestax_harness::free_port()))
}

// ---------------------------------------------------------------------------------------------
// Input

/// Appends lines `first..first + n` to `path`, ~500 bytes each; returns the bytes written.
fn write_lines(path: &Path, first: u64, n: u64) -> u64 {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut bytes = 0;
    let mut line = String::new();
    for i in first..first + n {
        line.clear();
        emit_line(&mut line, i);
        out.write_all(line.as_bytes()).unwrap();
        bytes += line.len() as u64;
    }
    out.flush().unwrap();
    bytes
}

/// One ~500-byte audit record (current time, so the collector keeps it).
fn emit_line(out: &mut String, i: u64) {
    let now = chrono_now();
    let _ = writeln!(
        out,
        r#"{{"id":"bench-{i:010}","org_id":"acme","time":"{now}","actor":{{"id":"u-{u}","name":"Ada Lovelace","email":"ada{u}@acme.example","kind":"user"}},"action":"scan.triggered","target":{{"kind":"repository","id":"r-{r}","name":"acme/service-{r}"}},"repository":"acme/service-{r}","outcome":"success","message":"scan {i} triggered from the dashboard for the default branch","metadata":{{"ip":"203.0.113.{ip}","user_agent":"Mozilla/5.0 (X11; Linux x86_64) bench","scan_type":"sast","ticket":"SEC-{t}"}}}}"#,
        u = i % 97,
        r = i % 13,
        ip = i % 250,
        t = i % 1000,
    );
}

fn chrono_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    // RFC 3339 in UTC without a date library: days since the epoch to a civil date.
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Writes `rate` lines per second spread over `files` for `duration`, in 10 ms ticks.
fn steady_writer(
    dir: &Path,
    files: usize,
    rate: u64,
    duration: Duration,
) -> std::thread::JoinHandle<u64> {
    let paths: Vec<PathBuf> = (0..files)
        .map(|f| dir.join(format!("svc-{f:03}.jsonl")))
        .collect();
    std::thread::spawn(move || {
        let mut handles: Vec<File> = paths
            .iter()
            .map(|p| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .unwrap()
            })
            .collect();
        let start = Instant::now();
        let mut written = 0u64;
        let mut tick = 0u64;
        let mut buf = String::new();
        while start.elapsed() < duration {
            tick += 1;
            let due = rate * tick / 100;
            let f = (tick as usize) % handles.len();
            buf.clear();
            while written < due {
                emit_line(&mut buf, 10_000_000 + written);
                written += 1;
            }
            handles[f].write_all(buf.as_bytes()).unwrap();
            let next = start + Duration::from_millis(10 * tick);
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        written
    })
}

// ---------------------------------------------------------------------------------------------
// Sinks

/// An OTLP/gRPC LogsService that counts records and acknowledges at once.
///
/// By default it reads a request only as far as counting needs: the gRPC frame (gunzipped when
/// compressed) and the protobuf down to each LogRecord, whose bytes are skipped
/// ([`CountedRequest`]). `BENCH_SINK=decode` decodes every request fully into an
/// `ExportLogsServiceRequest` instead (what the sink did before; it costs about as much CPU as
/// the agent, on the same 2 cores).
#[derive(Clone)]
struct AckSink {
    addr: SocketAddr,
    records: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl LogsService for AckSink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let n: usize = request
            .get_ref()
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        self.records.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

impl AckSink {
    async fn start() -> AckSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink = AckSink {
            addr: listener.local_addr().unwrap(),
            records: Arc::new(AtomicU64::new(0)),
        };
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        if std::env::var("BENCH_SINK").is_ok_and(|s| s == "decode") {
            println!("sink: decodes every request");
            let service = LogsServiceServer::new(sink.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(64 << 20);
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(incoming),
            );
        } else {
            println!("sink: counts LogRecords without decoding them");
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(CountingService(sink.records.clone()))
                    .serve_with_incoming(incoming),
            );
        }
        sink
    }

    fn count(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    fn reset(&self) {
        self.records.store(0, Ordering::Relaxed);
    }
}

/// An `ExportLogsServiceRequest` read only to count its LogRecords (`resource_logs` (1) →
/// `scope_logs` (2) → `log_records` (2)); every other field is skipped.
#[derive(Debug, Default)]
struct CountedRequest(u64);
#[derive(Debug, Default)]
struct CountedResourceLogs(u64);
#[derive(Debug, Default)]
struct CountedScopeLogs(u64);

macro_rules! counted {
    ($outer:ty, $tag:literal, |$this:ident, $wire:ident, $buf:ident, $ctx:ident| $count:expr) => {
        impl prost::Message for $outer {
            fn encode_raw(&self, _: &mut impl prost::bytes::BufMut) {}
            fn merge_field(
                &mut self,
                tag: u32,
                wire_type: prost::encoding::WireType,
                buf: &mut impl prost::bytes::Buf,
                ctx: prost::encoding::DecodeContext,
            ) -> Result<(), prost::DecodeError> {
                if tag == $tag {
                    let ($this, $wire, $buf, $ctx) = (&mut *self, wire_type, buf, ctx);
                    $count
                } else {
                    prost::encoding::skip_field(wire_type, tag, buf, ctx)
                }
            }
            fn encoded_len(&self) -> usize {
                0
            }
            fn clear(&mut self) {
                self.0 = 0;
            }
        }
    };
}

counted!(CountedRequest, 1, |this, wire, buf, ctx| {
    let mut inner = CountedResourceLogs::default();
    prost::encoding::message::merge(wire, &mut inner, buf, ctx)?;
    this.0 += inner.0;
    Ok(())
});
counted!(CountedResourceLogs, 2, |this, wire, buf, ctx| {
    let mut inner = CountedScopeLogs::default();
    prost::encoding::message::merge(wire, &mut inner, buf, ctx)?;
    this.0 += inner.0;
    Ok(())
});
counted!(CountedScopeLogs, 2, |this, wire, buf, ctx| {
    this.0 += 1;
    prost::encoding::skip_field(wire, 2, buf, ctx)
});

/// The sink's LogsService/Export over [`CountedRequest`]s.
#[derive(Clone)]
struct CountingService(Arc<AtomicU64>);

impl tonic::server::NamedService for CountingService {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

impl tonic::server::UnaryService<CountedRequest> for CountingService {
    type Response = ExportLogsServiceResponse;
    type Future = std::future::Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<CountedRequest>) -> Self::Future {
        self.0.fetch_add(request.get_ref().0, Ordering::Relaxed);
        std::future::ready(Ok(tonic::Response::new(
            ExportLogsServiceResponse::default(),
        )))
    }
}

impl tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for CountingService {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move {
            let mut accept = tonic::codec::EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<
                ExportLogsServiceResponse,
                CountedRequest,
            >::default())
            .apply_compression_config(accept, Default::default())
            .apply_max_message_size_config(Some(64 << 20), None);
            Ok(grpc.unary(service, request).await)
        })
    }
}

/// A TCP listener counting newline-terminated lines (rsyslog's output).
struct LineSink {
    addr: SocketAddr,
    lines: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl LineSink {
    fn start() -> LineSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let lines = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (lines.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let l = l.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            return;
                        }
                        let nl = buf[..n].iter().filter(|&&b| b == b'\n').count();
                        l.fetch_add(nl as u64, Ordering::Relaxed);
                    }
                });
            }
        });
        LineSink { addr, lines, stop }
    }

    fn count(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }
}

impl Drop for LineSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

// ---------------------------------------------------------------------------------------------
// The agent and the collector

struct Bins {
    agent: PathBuf,
    collector: PathBuf,
}

impl Bins {
    fn locate() -> Bins {
        let built = PathBuf::from(env!("CARGO_BIN_EXE_codestax-agent"));
        let collector = built.with_file_name("codestax-collector");
        // Another agent binary (e.g. a build of an earlier commit) for before/after runs.
        let agent = std::env::var_os("BENCH_AGENT_BIN").map_or(built, PathBuf::from);
        println!("agent binary: {}", agent.display());
        let status = Command::new(option_env!("CARGO").unwrap_or("cargo"))
            .args(["build", "--release", "--quiet", "-p", "codestax-collector"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("run cargo build");
        assert!(
            status.success() && collector.exists(),
            "no collector binary"
        );
        Bins { agent, collector }
    }
}

fn start_agent(bins: &Bins, dir: &Path, endpoint: &str, token: &str, glob: &Path) -> Proc {
    let config = dir.join("agent.toml");
    fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"
[collector]
endpoint = "{endpoint}"
token = "{token}"
[[sources.files]]
include = ["{glob}"]
[otlp]
grpc_listen = "{grpc}"
http_listen = "{http}"
[api]
listen = "{api}"
[log]
level = "warn"
{extra}
"#,
            extra = std::env::var("BENCH_AGENT_TOML").unwrap_or_default(),
            data = dir.join("data").display(),
            glob = glob.display(),
            grpc = free_addr(),
            http = free_addr(),
            api = free_addr(),
        ),
    )
    .unwrap();
    let stderr = File::create(dir.join("agent.stderr")).unwrap();
    Proc(
        Command::new(&bins.agent)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start codestax-agent"),
    )
}

fn agent_throughput(bins: &Bins, sink: &AckSink, logs: &Path, lines: u64, bytes: u64) -> Row {
    sink.reset();
    let dir = tempfile::tempdir_in(bench_tmp()).unwrap();
    let sink_cpu0 = cpu_seconds(std::process::id());
    let started = Instant::now();
    let agent = start_agent(
        bins,
        dir.path(),
        &format!("http://{}", sink.addr),
        "bench",
        &logs.join("*.jsonl"),
    );
    let mut peak = 0;
    let done = wait_for(Duration::from_secs(600), || {
        peak = peak.max(status_kib(agent.pid(), "VmRSS"));
        sink.count() >= lines
    });
    let elapsed = started.elapsed().as_secs_f64();
    assert!(done, "the sink got {} of {lines}", sink.count());
    let cpu = cpu_seconds(agent.pid());
    // The bench process is the sink (and this polling loop): it shares the 2 cores.
    let sink_cpu = cpu_seconds(std::process::id()) - sink_cpu0;
    let hwm = status_kib(agent.pid(), "VmHWM").max(peak);
    let load = load();
    println!(
        "agent -> ack sink: {lines} records in {elapsed:.2} s, {:.1} MiB/s, {:.0} records/s, \
         {cpu:.2} CPU s (sink {sink_cpu:.2}), peak RSS {}, load {load}",
        bytes as f64 / MIB / elapsed,
        lines as f64 / elapsed,
        mib(hwm)
    );
    Row {
        name: "agent, file → OTLP sink that acks at once",
        load,
        figures: vec![
            (
                "throughput (target ≥ 100 MiB/s)",
                format!(
                    "{:.1} MiB/s ({:.0} records/s, {lines} lines in {elapsed:.1} s)",
                    bytes as f64 / MIB / elapsed,
                    lines as f64 / elapsed
                ),
            ),
            (
                "CPU per MiB",
                format!(
                    "{:.4} CPU s/MiB ({cpu:.2} CPU s; the sink: {sink_cpu:.2} CPU s)",
                    cpu / (bytes as f64 / MIB)
                ),
            ),
            ("peak RSS under full load (target < 50 MiB)", mib(hwm)),
        ],
    }
}

fn collector_throughput(bins: &Bins, logs: &Path, lines: u64) -> Row {
    // Only the first `lines` records: a file of its own.
    let dir = tempfile::tempdir_in(bench_tmp()).unwrap();
    let input = dir.path().join("in");
    fs::create_dir_all(&input).unwrap();
    let mut src = File::open(logs.join("app.jsonl")).unwrap();
    let mut out = BufWriter::new(File::create(input.join("app.jsonl")).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    let (mut seen, mut bytes) = (0u64, 0u64);
    'copy: loop {
        let n = src.read(&mut buf).unwrap();
        assert!(n > 0, "the throughput file has fewer lines");
        for (i, b) in buf[..n].iter().enumerate() {
            if *b == b'\n' {
                seen += 1;
                if seen == lines {
                    out.write_all(&buf[..=i]).unwrap();
                    bytes += i as u64 + 1;
                    break 'copy;
                }
            }
        }
        out.write_all(&buf[..n]).unwrap();
        bytes += n as u64;
    }
    out.flush().unwrap();

    let (http, grpc, metrics) = (free_addr(), free_addr(), free_addr());
    let config = dir.path().join("collector.toml");
    fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"{http}\"\n[grpc]\nlisten = \"{grpc}\"\n[metrics]\nlisten = \"{metrics}\"\n[log]\nlevel = \"warn\"\n",
            dir.path().join("collector").display()
        ),
    )
    .unwrap();
    let key = |role: &str| {
        let out = Command::new(&bins.collector)
            .args([
                "keys", "create", "--org", "acme", "--role", role, "--config",
            ])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (ingest, admin) = (key("INGEST"), key("ORG_ADMIN"));
    let collector = Proc(
        Command::new(&bins.collector)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.path().join("collector.stderr")).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(wait_for(Duration::from_secs(60), || {
        http_get(http, "/readyz", None).is_some_and(|(s, _)| s == 200)
    }));
    let total = || {
        http_get(
            http,
            "/api/v1/orgs/acme/audit-log/facets?action=scan.triggered",
            Some(&admin),
        )
        .and_then(|(_, body)| {
            let at = body.find("\"total\":")? + 8;
            body[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0)
    };
    let agent_dir = dir.path().join("agent");
    fs::create_dir_all(&agent_dir).unwrap();
    let started = Instant::now();
    let agent = start_agent(
        bins,
        &agent_dir,
        &format!("http://{grpc}"),
        &ingest,
        &input.join("*.jsonl"),
    );
    let mut last = 0;
    let done = wait_for(Duration::from_secs(600), || {
        std::thread::sleep(Duration::from_millis(200));
        last = total();
        last >= lines
    });
    let elapsed = started.elapsed().as_secs_f64();
    assert!(done, "the collector has {last} of {lines}");
    let (agent_cpu, collector_cpu) = (cpu_seconds(agent.pid()), cpu_seconds(collector.pid()));
    let load = load();
    println!(
        "agent -> collector: {lines} records searchable in {elapsed:.2} s, {:.1} MiB/s; \
         CPU s agent {agent_cpu:.2}, collector {collector_cpu:.2}; load {load}",
        bytes as f64 / MIB / elapsed
    );
    drop(agent);
    drop(collector);
    Row {
        name: "agent, file → real collector (WAL fsync, index)",
        load,
        figures: vec![(
            "throughput until searchable",
            format!(
                "{:.1} MiB/s ({:.0} records/s, {lines} lines in {elapsed:.1} s; CPU s: agent {agent_cpu:.1}, collector {collector_cpu:.1})",
                bytes as f64 / MIB / elapsed,
                lines as f64 / elapsed
            ),
        )],
    }
}

/// `GET path` over HTTP/1.0; (status, body).
fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n{auth}\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

fn agent_idle(bins: &Bins, sink: &AckSink) -> Row {
    sink.reset();
    let dir = tempfile::tempdir_in(bench_tmp()).unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    for f in 0..100 {
        write_lines(&logs.join(format!("svc-{f:03}.jsonl")), f * 10, 10);
    }
    let agent = start_agent(
        bins,
        dir.path(),
        &format!("http://{}", sink.addr),
        "bench",
        &logs.join("*.jsonl"),
    );
    assert!(wait_for(Duration::from_secs(60), || sink.count() >= 1000));
    std::thread::sleep(Duration::from_secs(3));
    let cpu0 = cpu_seconds(agent.pid());
    std::thread::sleep(Duration::from_secs(10));
    let idle_cpu = (cpu_seconds(agent.pid()) - cpu0) / 10.0 * 100.0;
    let rss = status_kib(agent.pid(), "VmRSS");
    let (anon, file) = (
        status_kib(agent.pid(), "RssAnon"),
        status_kib(agent.pid(), "RssFile"),
    );
    let load = load();
    println!(
        "agent idle, 100 files: RSS {} (anonymous {}, file-backed {}), CPU {idle_cpu:.2} % of a core; load {load}",
        mib(rss),
        mib(anon),
        mib(file)
    );
    Row {
        name: "agent, 100 files watched, idle",
        load,
        figures: vec![
            (
                "RSS (target < 15 MiB)",
                format!(
                    "{} ({} anonymous, {} file-backed)",
                    mib(rss),
                    mib(anon),
                    mib(file)
                ),
            ),
            ("CPU", format!("{idle_cpu:.2} % of one core")),
        ],
    }
}

fn agent_steady(bins: &Bins, sink: &AckSink) -> Row {
    sink.reset();
    let dir = tempfile::tempdir_in(bench_tmp()).unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let agent = start_agent(
        bins,
        dir.path(),
        &format!("http://{}", sink.addr),
        "bench",
        &logs.join("*.jsonl"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let (cpu, peak, written) = steady(agent.pid(), &logs);
    assert!(
        wait_for(Duration::from_secs(60), || sink.count() >= written),
        "the sink got {} of {written}",
        sink.count()
    );
    let load = load();
    println!(
        "agent at 10,000 records/s: CPU {cpu:.1} % of a core, peak RSS {}; load {load}",
        mib(peak)
    );
    Row {
        name: "agent, 10,000 records/s into 10 files → ack sink",
        load,
        figures: vec![
            (
                "CPU (target < 10 % of one core)",
                format!("{cpu:.1} % of one core"),
            ),
            ("RSS", mib(peak)),
        ],
    }
}

/// Runs the 10,000 records/s writer for 12 s; (CPU % of a core over the last 10 s, peak RSS,
/// records written).
fn steady(pid: u32, logs: &Path) -> (f64, u64, u64) {
    let writer = steady_writer(logs, 10, 10_000, Duration::from_secs(12));
    std::thread::sleep(Duration::from_secs(2));
    let (t0, c0) = (Instant::now(), cpu_seconds(pid));
    let mut peak = 0;
    while !writer.is_finished() {
        peak = peak.max(status_kib(pid, "VmRSS"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64() * 100.0;
    (cpu, peak, writer.join().unwrap())
}

// ---------------------------------------------------------------------------------------------
// rsyslog

fn start_rsyslog(dir: &Path, glob: &Path, sink: &LineSink) -> Proc {
    let work = dir.join("rsyslog-work");
    fs::create_dir_all(&work).unwrap();
    let config = dir.join("rsyslog.conf");
    fs::write(
        &config,
        format!(
            r#"global(workDirectory="{work}" maxMessageSize="64k")
module(load="imfile" mode="inotify")
template(name="raw" type="string" string="%msg%\n")
input(type="imfile" file="{glob}" tag="bench" addMetadata="off")
if $syslogtag == "bench" then {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" template="raw")
}}
"#,
            work = work.display(),
            glob = glob.display(),
            port = sink.addr.port(),
        ),
    )
    .unwrap();
    Proc(
        Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&config)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("rsyslog.stderr")).unwrap())
            .spawn()
            .expect("start rsyslogd"),
    )
}

fn rsyslog_throughput(logs: &Path, lines: u64, bytes: u64) -> Row {
    let dir = tempfile::tempdir_in(bench_tmp()).unwrap();
    let sink = LineSink::start();
    let started = Instant::now();
    let rsyslog = start_rsyslog(dir.path(), &logs.join("*.jsonl"), &sink);
    let mut peak = 0;
    let done = wait_for(Duration::from_secs(600), || {
        peak = peak.max(status_kib(rsyslog.pid(), "VmRSS"));
        sink.count() >= lines
    });
    let elapsed = started.elapsed().as_secs_f64();
    assert!(done, "rsyslog delivered {} of {lines}", sink.count());
    let cpu = cpu_seconds(rsyslog.pid());
    let hwm = status_kib(rsyslog.pid(), "VmHWM").max(peak);
    let load = load();
    println!(
        "rsyslog -> TCP: {lines} lines in {elapsed:.2} s, {:.1} MiB/s, {cpu:.2} CPU s, peak RSS {}; load {load}",
        bytes as f64 / MIB / elapsed,
        mib(hwm)
    );
    Row {
        name: "rsyslog imfile → TCP line counter (no fsync, no acks)",
        load,
        figures: vec![
            (
                "throughput",
                format!(
                    "{:.1} MiB/s ({:.0} lines/s, {lines} lines in {elapsed:.1} s)",
                    bytes as f64 / MIB / elapsed,
                    lines as f64 / elapsed
                ),
            ),
            (
                "CPU per MiB",
                format!("{:.3} CPU s/MiB", cpu / (bytes as f64 / MIB)),
            ),
            ("peak RSS under full load", mib(hwm)),
        ],
    }
}

fn rsyslog_idle() -> Row {
    let dir = tempfile::tempdir_in(bench_tmp()).unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    for f in 0..100 {
        write_lines(&logs.join(format!("svc-{f:03}.jsonl")), f * 10, 10);
    }
    let sink = LineSink::start();
    let rsyslog = start_rsyslog(dir.path(), &logs.join("*.jsonl"), &sink);
    assert!(wait_for(Duration::from_secs(60), || sink.count() >= 1000));
    std::thread::sleep(Duration::from_secs(3));
    let cpu0 = cpu_seconds(rsyslog.pid());
    std::thread::sleep(Duration::from_secs(10));
    let idle_cpu = (cpu_seconds(rsyslog.pid()) - cpu0) / 10.0 * 100.0;
    let rss = status_kib(rsyslog.pid(), "VmRSS");
    let (anon, file) = (
        status_kib(rsyslog.pid(), "RssAnon"),
        status_kib(rsyslog.pid(), "RssFile"),
    );
    let load = load();
    println!(
        "rsyslog idle, 100 files: RSS {}, CPU {idle_cpu:.2} %; load {load}",
        mib(rss)
    );
    Row {
        name: "rsyslog, 100 files watched, idle",
        load,
        figures: vec![
            (
                "RSS",
                format!(
                    "{} ({} anonymous, {} file-backed)",
                    mib(rss),
                    mib(anon),
                    mib(file)
                ),
            ),
            ("CPU", format!("{idle_cpu:.2} % of one core")),
        ],
    }
}

fn rsyslog_steady() -> Row {
    let dir = tempfile::tempdir_in(bench_tmp()).unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let sink = LineSink::start();
    let rsyslog = start_rsyslog(dir.path(), &logs.join("*.jsonl"), &sink);
    std::thread::sleep(Duration::from_millis(500));
    let (cpu, peak, written) = steady(rsyslog.pid(), &logs);
    assert!(
        wait_for(Duration::from_secs(60), || sink.count() >= written),
        "rsyslog delivered {} of {written}",
        sink.count()
    );
    let load = load();
    println!(
        "rsyslog at 10,000 lines/s: CPU {cpu:.1} % of a core, peak RSS {}; load {load}",
        mib(peak)
    );
    Row {
        name: "rsyslog, 10,000 lines/s into 10 files → TCP",
        load,
        figures: vec![
            ("CPU", format!("{cpu:.1} % of one core")),
            ("RSS", mib(peak)),
        ],
    }
}
