//! Issue 14's import benchmark: `codestax import` (the real CLI binary) of an export-shaped
//! NDJSON file into a fresh collector, end to end.
//!
//! 1. The whole file: records/s from the CLI's start to its exit (every record durable), the
//!    CPU of each side per 1,000 records (the collector's until everything is indexed), peak RSS.
//! 2. The same file again: every record a duplicate, the index's count unchanged.
//! 3. Optionally, into a second collector: the CLI killed with -9 once its checkpoint has passed
//!    a share of the file, then run again to its end; the index holds each record once.

use crate::collector::Collector;
use crate::data::{Corpus, now_micros, rfc3339};
use crate::error::{BenchError, Result};
use crate::runs::{progress, temp_dir};
use crate::stats::{Table, load_average, thousands};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Sizes of the import bench.
#[derive(Debug, Clone, Copy)]
pub struct ImportSize {
    pub records: u64,
    /// Days the records' times span, ending a few minutes ago.
    pub days: i64,
    /// Kill the first CLI of the kill run once its checkpoint has passed this share of the
    /// file; `None`: no kill run.
    pub kill_at: Option<f64>,
}

/// Extra arguments for every `codestax import` run (e.g. the hidden `--batch-records N`,
/// `--in-flight N`).
pub type CliArgs<'a> = &'a [String];

/// Writes `corpus` (one org) as its NDJSON export would be: newest first, each record with the
/// chain fields, `received_at` and provenance the import drops or replaces, then a proof line.
/// Returns the bytes written.
pub fn write_export(corpus: &Corpus, path: &Path) -> Result<u64> {
    let file = std::fs::File::create(path).map_err(|e| BenchError::io("create", path, e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut line = Vec::with_capacity(2048);
    let mut seq = corpus.total();
    let mut written = 0u64;
    for b in (0..corpus.batches.len()).rev() {
        for j in (0..corpus.batch_size).rev() {
            let r = corpus.record(b, j);
            line.clear();
            r.write_ndjson(&mut line);
            // `}\n` reopened for the fields a stored record carries.
            line.truncate(line.len() - 2);
            let _ = write!(
                line,
                r#","schema_version":1,"received_at":"{}","seq":{seq},"provenance":{{"writer":"ingest","key_id":"key_bench01"}},"prev_hash":"{:064x}","hash":"{:064x}"}}"#,
                rfc3339(r.time_micros + 2_500),
                seq.wrapping_sub(1),
                seq
            );
            line.push(b'\n');
            out.write_all(&line)
                .map_err(|e| BenchError::io("write", path, e))?;
            written += line.len() as u64;
            seq -= 1;
        }
    }
    let proof = b"{\"codestax_proof\":{\"note\":\"not read by the import\"}}\n";
    out.write_all(proof)
        .and_then(|()| out.flush())
        .map_err(|e| BenchError::io("write", path, e))?;
    Ok(written + proof.len() as u64)
}

/// One run of the CLI.
#[derive(Debug, Clone)]
struct CliRun {
    wall: Duration,
    /// User + system CPU of the CLI, from `getrusage(RUSAGE_CHILDREN)`.
    cpu: f64,
    peak_rss_kib: u64,
    /// Its summary line (stderr), or the error.
    stderr: String,
    success: bool,
}

/// Resources of the bench's waited-for children so far: (CPU seconds, peak RSS KiB).
fn children_usage() -> (f64, u64) {
    // SAFETY: getrusage writes into the struct it is given, nothing else.
    #[allow(unsafe_code)]
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        secs(usage.ru_utime) + secs(usage.ru_stime),
        usage.ru_maxrss as u64,
    )
}

fn cli_command(cli: &Path, extra: CliArgs, c: &Collector, token: &str, input: &Path) -> Command {
    let mut cmd = Command::new(cli);
    cmd.args(["import", "--quiet", "--format", "ndjson", "--input"])
        .arg(input)
        .args(["--url", &c.url(""), "--token", token, "--source", "bench"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    crate::collector::die_with_parent(&mut cmd, libc::SIGKILL);
    cmd
}

/// A collector started for `org` in `data_dir`, its INGEST token, and how many documents its
/// index holds before the import: its own entries (the keys' creation), counted once searchable.
fn start_counted(
    collector_bin: &Path,
    data_dir: &Path,
    org: &str,
    settings: &str,
) -> Result<(Collector, String, u64)> {
    let org = org.to_string();
    let c = Collector::start(
        collector_bin,
        data_dir,
        std::slice::from_ref(&org),
        settings,
    )?;
    let token = c.keys(&org).ingest.clone();
    std::thread::sleep(Duration::from_secs(3));
    let own = c.metric("codestax_collector_index_documents")? as u64;
    Ok((c, token, own))
}

/// Runs the CLI to its end (or, with `kill_past`, kills it with -9 once the checkpoint beside
/// `input` has passed that byte offset).
fn run_cli(
    cli: &Path,
    extra: CliArgs,
    c: &Collector,
    token: &str,
    input: &Path,
    kill_past: Option<u64>,
) -> Result<CliRun> {
    let (cpu0, _) = children_usage();
    let started = Instant::now();
    let mut child = cli_command(cli, extra, c, token, input)
        .spawn()
        .map_err(|e| BenchError::io("start", cli, e))?;
    if let Some(offset) = kill_past {
        let mut checkpoint = input.as_os_str().to_owned();
        checkpoint.push(".import-checkpoint");
        loop {
            let passed = std::fs::read(&checkpoint)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["offset"].as_u64())
                .is_some_and(|at| at >= offset);
            if passed || child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
    }
    let out = child
        .wait_with_output()
        .map_err(|e| BenchError::io("wait for", cli, e))?;
    let wall = started.elapsed();
    let (cpu1, peak) = children_usage();
    Ok(CliRun {
        wall,
        cpu: cpu1 - cpu0,
        peak_rss_kib: peak,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        success: out.status.success(),
    })
}

/// The CLI next to the bench binary, as the collector is.
pub fn default_cli() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("codestax")))
        .unwrap_or_else(|| PathBuf::from("codestax"))
}

/// Runs the import bench and returns its table.
pub fn run(
    collector_bin: &Path,
    cli: &Path,
    extra: CliArgs,
    size: ImportSize,
) -> Result<Vec<Table>> {
    if !cli.exists() {
        return Err(BenchError::Collector(format!(
            "{} not found; build it first: cargo build --release -p codestax-cli",
            cli.display()
        )));
    }
    let dir = temp_dir("codestax-bench-import")?;
    let corpus = Corpus::search(
        size.records,
        1,
        size.records,
        1000,
        now_micros() - 300_000_000,
        size.days.max(1),
    );
    let org = corpus.orgs[0].id.clone();
    let n = corpus.total();
    let input = dir.path().join("audit-log.ndjson");
    progress(format!(
        "import: writing {n} records to {}",
        input.display()
    ));
    let bytes = write_export(&corpus, &input)?;
    let settings = "[retention]\ndefault_days = 3650\n";

    let mut table = Table::new(
        format!(
            "codestax import of an NDJSON export: {} records of one org over {} days, newest first, {} bytes a record; CLI: {} {}",
            thousands(n as f64),
            size.days.max(1),
            bytes / n.max(1),
            cli.display(),
            extra.join(" ")
        ),
        &[
            "run",
            "wall",
            "records/s",
            "CLI CPU / 1,000",
            "collector CPU / 1,000 (to indexed)",
            "CLI peak RSS",
            "collector peak RSS",
            "records indexed",
            "load",
            "CLI summary",
        ],
    );
    let (c, token, own) = start_counted(collector_bin, &dir.path().join("a"), &org, settings)?;
    for label in ["whole file", "same file again (all duplicates)"] {
        progress(format!("import: {label}"));
        let load0 = load_average();
        c.reset_peak_rss()?;
        let cpu0 = c.cpu_seconds()?;
        let run = run_cli(cli, extra, &c, &token, &input, None)?;
        if !run.success {
            return Err(BenchError::Collector(format!(
                "codestax import failed: {}",
                run.stderr
            )));
        }
        c.wait_indexed(own + n, Duration::from_secs(1800))?;
        let collector_cpu = c.cpu_seconds()? - cpu0;
        let docs = c.metric("codestax_collector_index_documents")? as u64 - own;
        table.row(vec![
            label.into(),
            format!("{:.1} s", run.wall.as_secs_f64()),
            thousands(n as f64 / run.wall.as_secs_f64()),
            format!("{:.1} ms", run.cpu * 1e6 / n as f64),
            format!("{:.1} ms", collector_cpu * 1e6 / n as f64),
            format!("{:.0} MiB", run.peak_rss_kib as f64 / 1024.0),
            format!("{:.0} MiB", c.peak_rss_kib()? as f64 / 1024.0),
            format!("{docs}{}", if docs == n { "" } else { " (NOT exact)" }),
            format!("{load0} → {}", load_average()),
            summary_line(&run.stderr),
        ]);
    }
    c.stop()?;

    if let Some(share) = size.kill_at {
        let (c, token, own) = start_counted(collector_bin, &dir.path().join("b"), &org, settings)?;
        progress(format!(
            "import: killed with -9 past {:.0} % of the file",
            share * 100.0
        ));
        let load0 = load_average();
        let killed = run_cli(
            cli,
            extra,
            &c,
            &token,
            &input,
            Some((bytes as f64 * share) as u64),
        )?;
        progress("import: run again from the checkpoint");
        let rerun = run_cli(cli, extra, &c, &token, &input, None)?;
        if !rerun.success {
            return Err(BenchError::Collector(format!(
                "the rerun failed: {}",
                rerun.stderr
            )));
        }
        c.wait_indexed(own + n, Duration::from_secs(1800))?;
        // Duplicates would be indexed on top: a count above n is caught too.
        std::thread::sleep(Duration::from_secs(2));
        let docs = c.metric("codestax_collector_index_documents")? as u64 - own;
        let wall = killed.wall + rerun.wall;
        table.row(vec![
            format!("kill -9 at {:.0} %, then run again", share * 100.0),
            format!(
                "{:.1} + {:.1} s",
                killed.wall.as_secs_f64(),
                rerun.wall.as_secs_f64()
            ),
            thousands(n as f64 / wall.as_secs_f64()),
            format!("{:.1} ms", (killed.cpu + rerun.cpu) * 1e6 / n as f64),
            "–".into(),
            "–".into(),
            "–".into(),
            format!("{docs}{}", if docs == n { "" } else { " (NOT exact)" }),
            format!("{load0} → {}", load_average()),
            summary_line(&rerun.stderr),
        ]);
        c.stop()?;
    }
    drop(dir);
    Ok(vec![table])
}

/// The CLI's first summary line, without the file names.
fn summary_line(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.starts_with("imported "))
        .unwrap_or(stderr)
        .to_string()
}
