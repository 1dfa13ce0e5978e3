//! Issue 17's benchmark: what streams deliver and what they cost ingest, against the bench's
//! own receivers ([`crate::receivers`]).
//!
//! 1. Delivery throughput per destination kind (https and syslog also over TLS) and per format
//!    (`ocsf`, `ecs` over https): one org pre-loaded, then one stream at a time with `start:
//!    "beginning"`, timed from its creation until the receiver holds every record.
//! 2. Steady ingest at a paced rate over 10 orgs, alternately without streams and with one
//!    stream per org (https, HEC and syslog in turn): collector CPU per 1,000 records (until
//!    everything is indexed and, with streams, delivered), also without the index's merge
//!    threads (whose timing, not streams, swings a run's total most), and, with streams, the lag
//!    from each record's `received_at` to its arrival at the receiver.

use crate::collector::{Collector, http_client};
use crate::data::Corpus;
use crate::error::{BenchError, Result};
use crate::load::{LoadOptions, Protocol, send};
use crate::receivers::{HEC_TOKEN, Receivers, Tally, s3_records};
use crate::runs::{progress, temp_dir};
use crate::stats::{Latencies, Table, fmt_ms, load_average, thousands};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sizes of the streams bench.
#[derive(Debug, Clone, Copy)]
pub struct StreamsSize {
    /// Records pre-loaded for the throughput runs.
    pub records: u64,
    /// Steady ingest rate over all orgs.
    pub rate: f64,
    /// Length of each steady run.
    pub seconds: u64,
    /// Pairs of steady runs (without, with streams).
    pub pairs: usize,
    /// Orgs of the steady runs; with streams, one stream each.
    pub orgs: usize,
    pub clients: usize,
    pub batch: usize,
}

/// The loopback allowlist the bench's destinations need.
const SETTINGS: &str =
    "[retention]\ndefault_days = 3650\n[streams]\nallow_destinations = [\"127.0.0.1\"]\n";

const S3_BUCKET: &str = "bench";
const S3_PREFIX: &str = "codestax";

/// A destination kind and where the bench receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Https,
    Hec,
    Syslog,
    S3,
    /// `https://` with the receivers' CA as `ca_pem`.
    HttpsTls,
    /// `tls: true` with the receivers' CA as `ca_pem`.
    SyslogTls,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Https => "https (plain http:// to loopback)",
            Kind::Hec => "splunk_hec (http://)",
            Kind::Syslog => "syslog (TCP, no TLS)",
            Kind::S3 => "s3 (moto_server)",
            Kind::HttpsTls => "https (TLS, `ca_pem`)",
            Kind::SyslogTls => "syslog (TLS, `ca_pem`)",
        }
    }

    fn destination(self, r: &Receivers, moto: Option<&str>) -> Value {
        match self {
            Kind::Https => json!({"kind": "https", "url": r.https_url()}),
            Kind::Hec => json!({"kind": "splunk_hec", "url": r.hec_url(), "token": HEC_TOKEN}),
            Kind::Syslog => {
                json!({"kind": "syslog", "address": r.syslog_address(), "tls": false})
            }
            Kind::S3 => json!({"kind": "s3", "bucket": S3_BUCKET, "prefix": S3_PREFIX,
                "region": "us-east-1", "endpoint": moto.unwrap_or_default(),
                "access_key_id": "bench", "secret_access_key": "bench-secret"}),
            Kind::HttpsTls => {
                json!({"kind": "https", "url": r.https_tls_url(), "ca_pem": r.ca_pem})
            }
            Kind::SyslogTls => json!({"kind": "syslog", "address": r.syslog_tls_address(),
                "tls": true, "ca_pem": r.ca_pem}),
        }
    }

    fn tally(self, r: &Receivers) -> Option<&Arc<Tally>> {
        match self {
            Kind::Https => Some(&r.https),
            Kind::Hec => Some(&r.hec),
            Kind::Syslog => Some(&r.syslog),
            Kind::S3 => None,
            Kind::HttpsTls => Some(&r.https_tls),
            Kind::SyslogTls => Some(&r.syslog_tls),
        }
    }
}

/// The throughput runs: each destination kind in `native`, then the other formats over https.
const THROUGHPUT_RUNS: [(Kind, &str); 8] = [
    (Kind::Https, "native"),
    (Kind::Hec, "native"),
    (Kind::Syslog, "native"),
    (Kind::S3, "native"),
    (Kind::HttpsTls, "native"),
    (Kind::SyslogTls, "native"),
    (Kind::Https, "ocsf"),
    (Kind::Https, "ecs"),
];

/// `POST /api/v1/orgs/{org}/streams`; the new stream's id.
fn create_stream(
    c: &Collector,
    owner: &str,
    org: &str,
    name: &str,
    (start, format): (&str, &str),
    destination: Value,
) -> Result<String> {
    let url = c.url(&format!("/api/v1/orgs/{org}/streams"));
    let body = json!({"name": name, "format": format, "start": start, "destination": destination});
    let r = http_client()?
        .post(&url)
        .bearer_auth(owner)
        .json(&body)
        .send()
        .map_err(|e| BenchError::http(format!("POST {url}"), e))?;
    let status = r.status();
    let answer: Value = r
        .json()
        .map_err(|e| BenchError::http(format!("POST {url}"), e))?;
    match answer["id"].as_str() {
        Some(id) if status.as_u16() == 201 => Ok(id.to_string()),
        _ => Err(BenchError::http(
            format!("POST {url}"),
            format!("{status} {answer}"),
        )),
    }
}

fn delete_stream(c: &Collector, owner: &str, org: &str, id: &str) -> Result<()> {
    let url = c.url(&format!("/api/v1/orgs/{org}/streams/{id}"));
    let r = http_client()?
        .delete(&url)
        .bearer_auth(owner)
        .send()
        .map_err(|e| BenchError::http(format!("DELETE {url}"), e))?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(BenchError::http(format!("DELETE {url}"), r.status()))
    }
}

/// The stream's `status.last_error`, for a run that does not finish.
fn last_error(c: &Collector, owner: &str, org: &str, id: &str) -> String {
    let url = c.url(&format!("/api/v1/orgs/{org}/streams/{id}"));
    http_client()
        .ok()
        .and_then(|h| h.get(&url).bearer_auth(owner).send().ok())
        .and_then(|r| r.json::<Value>().ok())
        .map_or_else(|| "?".into(), |v| v["status"].to_string())
}

/// Polls `count` until it reaches `n`; the time it took, or an error after `limit`.
fn wait_count(
    what: &str,
    n: u64,
    limit: Duration,
    mut count: impl FnMut() -> Result<u64>,
) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let got = count()?;
        if got >= n {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(BenchError::Collector(format!(
                "{what}: only {got} of {n} records delivered after {limit:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the streams bench and returns its tables.
pub fn run(collector_bin: &std::path::Path, size: StreamsSize) -> Result<Vec<Table>> {
    let certs = temp_dir("codestax-bench-receivers-")?;
    let receivers = Receivers::start(certs.path())?;
    let moto = match codestax_harness::MotoS3::find_binary() {
        Ok(bin) => Some(bin),
        Err(why) => {
            println!("- s3: skipped: no moto ({why})");
            None
        }
    };
    let mut tables = vec![throughput(collector_bin, &receivers, moto, size)?];
    tables.push(steady(collector_bin, &receivers, size)?);
    Ok(tables)
}

fn throughput(
    bin: &std::path::Path,
    r: &Receivers,
    moto_bin: Option<PathBuf>,
    size: StreamsSize,
) -> Result<Table> {
    let dir = temp_dir("codestax-bench-streams-")?;
    let moto = match &moto_bin {
        Some(bin) => {
            let m = codestax_harness::MotoS3::launch(bin, dir.path())?;
            m.create_bucket(S3_BUCKET)?;
            Some(m)
        }
        None => None,
    };
    let corpus = Corpus::last_ten_minutes(size.records, 1, size.batch);
    let org = corpus.org_ids()[0].clone();
    progress("streams: starting the collector, one org");
    let c = Collector::start(bin, dir.path(), &corpus.org_ids(), SETTINGS)?;
    let owner = c.new_key(&org, "ORG_OWNER")?;
    progress(format!("streams: loading {} records", corpus.total()));
    let loaded = send(
        &c,
        &corpus,
        LoadOptions {
            protocol: Protocol::Ndjson,
            clients: size.clients,
            pace: None,
            sample_every: 0,
            pre_encode: false,
        },
    )?;
    c.wait_indexed(corpus.total(), Duration::from_secs(600))?;
    c.wait_idle(Duration::from_secs(120))?;
    let load0 = load_average();
    let mut rows = Vec::new();
    for (kind, format) in THROUGHPUT_RUNS {
        let label = match format {
            "native" => kind.label().to_string(),
            _ => format!("{}, `{format}`", kind.label()),
        };
        if kind == Kind::S3 && moto.is_none() {
            rows.push(vec![
                label,
                "skipped: no moto".into(),
                "".into(),
                "".into(),
                "".into(),
            ]);
            continue;
        }
        let endpoint = moto.as_ref().map(|m| m.endpoint());
        let before = match kind.tally(r) {
            Some(tally) => tally.records(),
            None => 0,
        };
        progress(format!("streams: delivering to {label}"));
        let cpu0 = c.cpu_seconds()?;
        let id = create_stream(
            &c,
            &owner,
            &org,
            &format!("bench-{kind:?}-{format}"),
            ("beginning", format),
            kind.destination(r, endpoint.as_deref()),
        )?;
        let limit = Duration::from_secs(900);
        let took = match kind.tally(r) {
            Some(tally) => wait_count(&label, before + corpus.total(), limit, || {
                Ok(tally.records())
            }),
            None => {
                let endpoint = endpoint.clone().unwrap_or_default();
                wait_count(&label, corpus.total(), limit, || {
                    s3_records(&endpoint, S3_BUCKET, S3_PREFIX)
                })
            }
        };
        let took = took.map_err(|e| {
            BenchError::Collector(format!(
                "{e}; stream status {}",
                last_error(&c, &owner, &org, &id)
            ))
        })?;
        let cpu = c.cpu_seconds()? - cpu0;
        delete_stream(&c, &owner, &org, &id)?;
        let n = corpus.total() as f64;
        rows.push(vec![
            label,
            thousands(n),
            format!("{:.2} s", took.as_secs_f64()),
            thousands(n / took.as_secs_f64()),
            format!("{:.0} ms", cpu * 1e6 / n),
        ]);
        // Let the deleted stream's task go before the next one starts.
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut t = Table::new(
        format!(
            "Stream delivery throughput, one stream at a time from `start: \"beginning\"` over {} stored records of one org (loaded at {} records/s; load {load0} → {})",
            thousands(corpus.total() as f64),
            thousands(loaded.rate()),
            load_average()
        ),
        &[
            "destination",
            "records",
            "time to deliver all",
            "records/s",
            "collector CPU per 1,000 delivered",
        ],
    );
    for row in rows {
        t.row(row);
    }
    c.stop()?;
    Ok(t)
}

/// One steady run's figures.
struct SteadyRun {
    streams: usize,
    sent_rate: f64,
    cpu_per_1000_ms: f64,
    /// Of which the index's merge threads: the same merges in both runs over time, but when
    /// they fall in a run's window or not swings its total by about ±10 %.
    merge_cpu_per_1000_ms: f64,
    /// Of which the async runtime's threads, where ingest's requests and the streams' delivery
    /// run: what streams add shows here, apart from the index threads' swings.
    runtime_cpu_per_1000_ms: f64,
    lags: Latencies,
    load: String,
}

fn steady(bin: &std::path::Path, r: &Receivers, size: StreamsSize) -> Result<Table> {
    let mut runs = Vec::new();
    for _ in 0..size.pairs {
        for streams in [false, true] {
            progress(format!(
                "streams: steady run {} of {}, streams {}",
                runs.len() + 1,
                2 * size.pairs,
                if streams { "on" } else { "off" }
            ));
            runs.push(steady_run(bin, r, size, streams)?);
        }
    }
    let mut t = Table::new(
        format!(
            "Steady ingest at {} records/s over {} orgs for {} s, NDJSON, {} clients, batches of {}: without streams and with one stream per org (https, splunk_hec, syslog in turn), interleaved",
            thousands(size.rate),
            size.orgs,
            size.seconds,
            size.clients,
            size.batch
        ),
        &[
            "run",
            "streams",
            "sent records/s",
            "collector CPU per 1,000 records (of which merges; runtime threads)",
            "lag p50 / p99 / max (records)",
            "load",
        ],
    );
    for (i, run) in runs.iter().enumerate() {
        t.row(vec![
            (i + 1).to_string(),
            run.streams.to_string(),
            thousands(run.sent_rate),
            format!(
                "{:.1} ms ({:.1} ms; {:.1} ms)",
                run.cpu_per_1000_ms, run.merge_cpu_per_1000_ms, run.runtime_cpu_per_1000_ms
            ),
            if run.streams == 0 {
                "".into()
            } else {
                format!(
                    "{} / {} / {} ({})",
                    fmt_ms(run.lags.p50_ms()),
                    fmt_ms(run.lags.p99_ms()),
                    fmt_ms(run.lags.max_ms()),
                    thousands(run.lags.len() as f64)
                )
            },
            run.load.clone(),
        ]);
    }
    let mean = |on: bool, cpu: fn(&SteadyRun) -> f64| {
        let v: Vec<f64> = runs
            .iter()
            .filter(|r| (r.streams > 0) == on)
            .map(cpu)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let all = |r: &SteadyRun| r.cpu_per_1000_ms;
    let (off, on) = (mean(false, all), mean(true, all));
    let no_merges = |r: &SteadyRun| r.cpu_per_1000_ms - r.merge_cpu_per_1000_ms;
    let (off_nm, on_nm) = (mean(false, no_merges), mean(true, no_merges));
    let runtime = |r: &SteadyRun| r.runtime_cpu_per_1000_ms;
    let (off_rt, on_rt) = (mean(false, runtime), mean(true, runtime));
    t.row(vec![
        "mean".into(),
        "0 → streams".into(),
        "".into(),
        format!(
            "{off:.1} → {on:.1} ms ({:+.1} %, target ≤ +10 %); without merges {off_nm:.1} → \
             {on_nm:.1} ms ({:+.1} %); runtime threads {off_rt:.1} → {on_rt:.1} ms ({:+.1} ms, \
             {:+.1} % of the total without streams)",
            (on / off - 1.0) * 100.0,
            (on_nm / off_nm - 1.0) * 100.0,
            on_rt - off_rt,
            (on_rt - off_rt) / off * 100.0
        ),
        "".into(),
        "".into(),
    ]);
    Ok(t)
}

fn steady_run(
    bin: &std::path::Path,
    r: &Receivers,
    size: StreamsSize,
    streams: bool,
) -> Result<SteadyRun> {
    let dir = temp_dir("codestax-bench-streams-steady-")?;
    let records = (size.rate * size.seconds as f64) as u64;
    let corpus = Corpus::last_ten_minutes(records, size.orgs, size.batch);
    let c = Collector::start(bin, dir.path(), &corpus.org_ids(), SETTINGS)?;
    let kinds = [Kind::Https, Kind::Hec, Kind::Syslog];
    let mut expected = Vec::new();
    for (i, org) in corpus.org_ids().iter().enumerate() {
        // An owner key in both runs, so both start from the same log.
        let owner = c.new_key(org, "ORG_OWNER")?;
        if streams {
            let kind = kinds[i % kinds.len()];
            create_stream(
                &c,
                &owner,
                org,
                "bench",
                ("now", "native"),
                kind.destination(r, None),
            )?;
            expected.push((kind, corpus.orgs[i].records));
        }
    }
    // Let the streams' tasks start and settle before the clock.
    std::thread::sleep(Duration::from_secs(2));
    c.wait_idle(Duration::from_secs(30))?;
    let started_micros = chrono::Utc::now().timestamp_micros();
    let mut targets = Vec::new();
    for kind in kinds {
        let tally = kind.tally(r).expect("non-S3 kinds have tallies");
        tally.reset_lags(started_micros);
        let n: u64 = expected
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n)
            .sum();
        targets.push((kind, tally.records() + n));
    }
    let load0 = load_average();
    let cpu0 = c.cpu_seconds()?;
    let merges0 = c.merge_threads_cpu()?;
    let runtime0 = c.runtime_threads_cpu()?;
    let report = send(
        &c,
        &corpus,
        LoadOptions {
            protocol: Protocol::Ndjson,
            clients: size.clients,
            pace: Some(size.rate),
            sample_every: 0,
            pre_encode: false,
        },
    )?;
    c.wait_indexed(corpus.total(), Duration::from_secs(600))?;
    let mut lags = Latencies::default();
    if streams {
        for (kind, target) in &targets {
            let tally = kind.tally(r).expect("non-S3 kinds have tallies");
            wait_count(kind.label(), *target, Duration::from_secs(600), || {
                Ok(tally.records())
            })?;
            lags.extend(tally.lags());
        }
    }
    let cpu = c.cpu_seconds()? - cpu0;
    let merges = c.merge_threads_cpu()?.since(&merges0);
    let runtime = c.runtime_threads_cpu()?.since(&runtime0);
    let load1 = load_average();
    c.stop()?;
    Ok(SteadyRun {
        streams: expected.len(),
        sent_rate: report.rate(),
        cpu_per_1000_ms: cpu * 1e6 / corpus.total() as f64,
        merge_cpu_per_1000_ms: merges * 1e6 / corpus.total() as f64,
        runtime_cpu_per_1000_ms: runtime * 1e6 / corpus.total() as f64,
        lags,
        load: format!("{load0} → {load1}"),
    })
}
