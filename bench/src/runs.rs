//! The benchmarks of issue 3, each a function that runs one end to end and returns its tables:
//! ingest with durable acks, freshness, search over a large corpus; each with the PostgreSQL
//! baseline in the same run unless it is unavailable (then said loudly in the output).

use crate::cleanup::TempDir;
use crate::collector::{
    Buckets, Collector, Memory, MemorySampler, dir_bytes, dir_usage, metric_series, metric_value,
    proc_status_kib, process_cpu_seconds,
};
use crate::data::{Corpus, DAY_MICROS, now_micros};
use crate::error::{BenchError, Result};
use crate::export;
use crate::load::{LoadOptions, LoadReport, Protocol, copy_into_postgres, send};
use crate::pg::Postgres;
use crate::search::{self, Kind, OrgChoice, Query};
use crate::stats::{Latencies, Table, fmt_ms, load_average, ratio, thousands};
use codestax_config::MAX_RETENTION_DAYS;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where the systems under test are.
#[derive(Debug, Clone)]
pub struct Env {
    pub collector_bin: PathBuf,
    /// PostgreSQL's bin dir, or why the baseline is skipped.
    pub postgres: std::result::Result<PathBuf, String>,
}

impl Env {
    fn postgres(&self) -> Option<&PathBuf> {
        match &self.postgres {
            Ok(p) => Some(p),
            Err(why) => {
                eprintln!("!! PostgreSQL baseline SKIPPED: {why}");
                None
            }
        }
    }
}

pub(crate) fn temp_dir(prefix: &str) -> Result<TempDir> {
    TempDir::new(prefix).map_err(|e| BenchError::io("create a temp dir", std::env::temp_dir(), e))
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

pub(crate) fn progress(msg: impl AsRef<str>) {
    eprintln!(
        "[{}] {} (load {})",
        chrono::Utc::now().format("%H:%M:%S"),
        msg.as_ref(),
        load_average()
    );
}

/// Ingest sizes.
#[derive(Debug, Clone, Copy)]
pub struct IngestSize {
    pub records: u64,
    pub clients: usize,
    pub batch: usize,
    pub orgs: usize,
}

/// The collector's figures of one ingest run, for the side-by-side table.
struct IngestFigures {
    rate: f64,
    cpu_ms_per_1000: f64,
    rss_kib: u64,
    /// Of sampled records of the current week, and of past weeks (NaN: none sampled).
    freshness_p99_ms: f64,
    freshness_past_p99_ms: f64,
    /// Search p99 right after the load, largest org: filtered, full-text (common word), facets.
    search_p99_ms: [f64; 3],
    /// The same kinds of query once the collector is idle (merges done), more of them: what
    /// the index the load left costs to search, apart from the load's tail.
    idle_search_p99_ms: [f64; 3],
    /// The collector's CPU per query of each kind then, in ms.
    idle_search_cpu_ms: [f64; 3],
}

/// The queries timed after an ingest load, in [`IngestFigures::search_p99_ms`]'s order.
const AFTER_LOAD_QUERIES: [Kind; 3] = [Kind::Filtered, Kind::TextCommon, Kind::Facets];
/// Queries per kind timed after an ingest load (ten more warm up).
const AFTER_LOAD_QUERIES_PER_KIND: usize = 100;
/// Queries per kind timed once the collector is idle after the load (ten more warm up): enough
/// for a p99 that two runs can be compared by (100 right after the load varied 2–5× run to run,
/// BENCHMARKS.md, session 21).
const IDLE_QUERIES_PER_KIND: usize = 500;
/// How long the bench waits for the collector to be idle after a load before searching anyway.
const IDLE_WAIT_LIMIT: Duration = Duration::from_secs(120);
/// The collector's histogram of index commit durations.
const COMMIT_SECONDS: &str = "codestax_collector_index_commit_seconds";
/// How long the oldest record of each commit waited from its fsync until searchable.
const INDEX_LAG_SECONDS: &str = "codestax_collector_index_lag_seconds";
/// Each wait of the indexer for a flight while the cold stage was full.
const HELD_BACK_SECONDS: &str = "codestax_collector_index_held_back_seconds";
const WAL_FSYNCS: &str = "codestax_collector_wal_fsyncs";

/// The value of unlabelled metric `name` in a `/metrics` text read once for several metrics.
fn unlabelled(text: &str, name: &str) -> Result<f64> {
    metric_value(text, name).ok_or_else(|| BenchError::Collector(format!("/metrics has no {name}")))
}

/// Benchmark 1, ingest with durable acks: records/s, fsyncs/s, CPU, peak RSS (and freshness
/// under that load), for each record-time spread in `spread_days` (0: the last 10 minutes; N:
/// scattered uniformly over the last N days) and each of `protocols`, with the PostgreSQL
/// baseline once per spread; then one table with every spread side by side.
pub fn ingest(
    env: &Env,
    size: IngestSize,
    spread_days: &[i64],
    protocols: &[Protocol],
) -> Result<Vec<Table>> {
    let keep = i64::from(MAX_RETENTION_DAYS);
    if let Some(bad) = spread_days.iter().find(|&&d| !(0..keep).contains(&d)) {
        return Err(BenchError::Usage(format!(
            "--spread-days {bad}: the collector keeps records at most {keep} days, so a spread must be 0 to {} days (retention would delete the oldest records of a wider one)",
            keep - 1
        )));
    }
    let mut tables = Vec::new();
    let mut rows = Vec::new();
    for &days in spread_days {
        let corpus = Corpus::last_ten_minutes(size.records, size.orgs, size.batch);
        let corpus = if days > 0 {
            corpus.scattered_over(days * DAY_MICROS)
        } else {
            corpus
        };
        let pg = match env.postgres() {
            Some(bin) => {
                progress(format!(
                    "ingest ({}): PostgreSQL baseline (COPY, one transaction per batch, indexed table)",
                    spread_label(days)
                ));
                let pg = Postgres::start(bin)?;
                pg.create_table(true)?;
                let load0 = load_average();
                let r = copy_into_postgres(&pg, &corpus, size.clients, 1)?;
                let note = format!("PG {}, load {load0} → {}", pg.version, load_average());
                pg.stop();
                Some((r, note))
            }
            None => None,
        };
        for &protocol in protocols {
            let (table, figures) = ingest_one(env, &corpus, size, protocol, pg.as_ref())?;
            tables.push(table);
            rows.push((days, protocol, figures, pg.as_ref().map(|(r, _)| r.rate())));
        }
    }
    tables.push(ingest_side_by_side(size, &rows));
    Ok(tables)
}

fn spread_label(days: i64) -> String {
    match days {
        0 => "in order, the last 10 minutes".into(),
        d => format!("scattered over {d} days"),
    }
}

/// Every spread's figures beside each other and beside PostgreSQL's on the same records.
fn ingest_side_by_side(
    size: IngestSize,
    rows: &[(i64, Protocol, IngestFigures, Option<f64>)],
) -> Table {
    let mut t = Table::new(
        format!(
            "Ingest by record-time spread, side by side — {} records, {} orgs, {} clients, batches of {}",
            thousands(size.records as f64),
            size.orgs,
            size.clients,
            size.batch
        ),
        &[
            "record times",
            "protocol",
            "collector records/s",
            "÷ in order",
            "CPU per 1,000 records",
            "peak RSS",
            "freshness p99 current week / past weeks",
            "search p99 after: filtered / full-text / facets",
            "search p99 once idle: filtered / full-text / facets (÷ in order)",
            "collector CPU per query once idle: filtered / full-text / facets (÷ in order)",
            "PostgreSQL records/s",
            "collector ÷ PG",
        ],
    );
    for (days, protocol, f, pg_rate) in rows {
        let in_order_row = rows
            .iter()
            .find(|(d, p, _, _)| *d == 0 && p == protocol)
            .map(|(_, _, f, _)| f);
        let in_order = in_order_row.map_or(f64::NAN, |f| f.rate);
        let beside_in_order = |of: fn(&IngestFigures) -> [f64; 3], show: fn(f64) -> String| {
            of(f)
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let base = in_order_row.map_or(f64::NAN, |o| of(o)[i]);
                    format!("{} ({})", show(*v), ratio(*v, base))
                })
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let idle_search = beside_in_order(|f| f.idle_search_p99_ms, fmt_ms);
        let idle_cpu = beside_in_order(|f| f.idle_search_cpu_ms, |ms| format!("{ms:.2} ms"));
        t.row(vec![
            spread_label(*days),
            protocol.label().into(),
            thousands(f.rate),
            ratio(f.rate, in_order),
            format!("{:.0} ms", f.cpu_ms_per_1000),
            mib(f.rss_kib),
            format!(
                "{} / {}",
                fmt_ms(f.freshness_p99_ms),
                fmt_ms(f.freshness_past_p99_ms)
            ),
            f.search_p99_ms
                .iter()
                .map(|ms| fmt_ms(*ms))
                .collect::<Vec<_>>()
                .join(" / "),
            idle_search,
            idle_cpu,
            pg_rate.map_or("skipped".into(), thousands),
            ratio(f.rate, pg_rate.unwrap_or(f64::NAN)),
        ]);
    }
    t
}

fn ingest_one(
    env: &Env,
    corpus: &Corpus,
    size: IngestSize,
    protocol: Protocol,
    pg: Option<&(LoadReport, String)>,
) -> Result<(Table, IngestFigures)> {
    let dir = temp_dir("codestax-bench-ingest-")?;
    progress(format!(
        "ingest ({}): starting the collector, {} orgs",
        protocol.label(),
        size.orgs
    ));
    let c = Collector::start(
        &env.collector_bin,
        dir.path(),
        &corpus.org_ids(),
        &format!("[retention]\ndefault_days = {MAX_RETENTION_DAYS}\n"),
    )?;
    let metrics0 = c.metrics()?;
    let fsyncs0 = unlabelled(&metrics0, WAL_FSYNCS)?;
    let commits0 = Buckets::of(&metrics0, COMMIT_SECONDS);
    let lags0 = Buckets::of(&metrics0, INDEX_LAG_SECONDS);
    let held0 = Buckets::of(&metrics0, HELD_BACK_SECONDS);
    // Absent from collectors older than the metric (a baseline build): 0.
    let held_sum =
        |text: &str| metric_value(text, &format!("{HELD_BACK_SECONDS}_sum")).unwrap_or(0.0);
    let held_sum0 = held_sum(&metrics0);
    let cpu0 = c.cpu_seconds()?;
    let load0 = load_average();
    progress(format!(
        "ingest ({}): sending {} records",
        protocol.label(),
        corpus.total()
    ));
    let sample_every = (corpus.batches.len() / 250).max(1);
    let report = send(
        &c,
        corpus,
        LoadOptions {
            protocol,
            clients: size.clients,
            pace: None,
            sample_every,
            pre_encode: true,
        },
    )?;
    let metrics1 = c.metrics()?;
    let fsyncs = unlabelled(&metrics1, WAL_FSYNCS)? - fsyncs0;
    let commits = Buckets::of(&metrics1, COMMIT_SECONDS).since(&commits0);
    let lags = Buckets::of(&metrics1, INDEX_LAG_SECONDS).since(&lags0);
    let held = Buckets::of(&metrics1, HELD_BACK_SECONDS).since(&held0);
    let held_secs = held_sum(&metrics1) - held_sum0;
    let load1 = load_average();
    let rss = c.peak_rss_kib()?;
    // Indexing goes on after the last ack: count the CPU until everything is searchable.
    c.wait_indexed(corpus.total(), Duration::from_secs(600))?;
    let cpu = c.cpu_seconds()? - cpu0;
    let bench_cpu = report.client_cpu;
    // Does the index the load left search as fast as an in-order one?
    let (search_p99_ms, _) = after_load_search(&c, corpus, AFTER_LOAD_QUERIES_PER_KIND)?;
    let idle_after = c.wait_idle(IDLE_WAIT_LIMIT)?;
    let (idle_search_p99_ms, idle_search_cpu_ms) =
        after_load_search(&c, corpus, IDLE_QUERIES_PER_KIND)?;
    let days_held = search::days_with_records(
        &c,
        &corpus.orgs[0].id,
        corpus.start_micros - DAY_MICROS,
        now_micros(),
    )?;
    c.stop()?;
    drop(dir);

    let secs = report.elapsed.as_secs_f64();
    let mut t = Table::new(
        format!(
            "Ingest with durable acks, {}{} — {} records of ~{} B, {} clients, batches of {} (load {load0} → {load1})",
            protocol.label(),
            if corpus.scattered {
                format!(
                    ", times scattered over {} days",
                    corpus.span_micros / DAY_MICROS
                )
            } else {
                String::new()
            },
            thousands(corpus.total() as f64),
            mean_record_bytes(corpus),
            size.clients,
            size.batch
        ),
        &[
            "metric",
            "collector",
            "target",
            "PostgreSQL (COPY per batch)",
            "collector ÷ PG",
        ],
    );
    let pg_rate = pg.map_or(f64::NAN, |(r, _)| r.rate());
    t.row(vec![
        "records/s".into(),
        thousands(report.rate()),
        "≥ 50,000".into(),
        pg.map_or("skipped".into(), |(r, note)| {
            format!("{} ({note})", thousands(r.rate()))
        }),
        ratio(report.rate(), pg_rate),
    ]);
    t.row(vec![
        "batch ack p50 / p99".into(),
        format!(
            "{} / {}",
            fmt_ms(report.ack.p50_ms()),
            fmt_ms(report.ack.p99_ms())
        ),
        "".into(),
        pg.map_or("".into(), |(r, _)| {
            format!("{} / {}", fmt_ms(r.ack.p50_ms()), fmt_ms(r.ack.p99_ms()))
        }),
        "".into(),
    ]);
    t.row(vec![
        "WAL fsyncs/s (records per fsync)".into(),
        format!(
            "{:.0} ({:.0})",
            fsyncs / secs,
            corpus.total() as f64 / fsyncs.max(1.0)
        ),
        "".into(),
        "".into(),
        "".into(),
    ]);
    let bound = |b: &Buckets, q| {
        b.quantile_bound(q)
            .map_or("n/a".to_string(), |s| format!("≤ {}", fmt_ms(s * 1e3)))
    };
    t.row(vec![
        "index commits during the load: count, p50 / p99 duration (histogram bucket bounds)".into(),
        format!(
            "{:.0}, {} / {}",
            commits.count(),
            bound(&commits, 0.5),
            bound(&commits, 0.99)
        ),
        "".into(),
        "".into(),
        "".into(),
    ]);
    // The collector's own view of the current weeks' freshness: per commit, how long the oldest
    // batch it took had waited since its fsync (staged past-week records wait for their flight).
    t.row(vec![
        "index lag during the load: per commit, its oldest batch's fsync → commit, p50 / p99 (bucket bounds)".into(),
        format!("{} / {}", bound(&lags, 0.5), bound(&lags, 0.99)),
        "".into(),
        "".into(),
        "".into(),
    ]);
    // Past weeks' records that fill the cold stage hold the indexer back until a flight lands;
    // this week's records acknowledged just before wait with them.
    t.row(vec![
        "indexer held back by a full cold stage: waits, total, longest (bucket bound)".into(),
        format!(
            "{:.0}, {:.1} s, {}",
            held.count(),
            held_secs,
            bound(&held, 1.0)
        ),
        "".into(),
        "".into(),
        "".into(),
    ]);
    t.row(vec![
        "collector CPU per 1,000 records (all threads, indexing included)".into(),
        format!(
            "{:.0} ms → {} records per CPU-second",
            cpu * 1e6 / corpus.total() as f64,
            thousands(corpus.total() as f64 / cpu)
        ),
        "".into(),
        format!(
            "bench client used {:.0} ms per 1,000 records",
            bench_cpu * 1e6 / corpus.total() as f64
        ),
        "".into(),
    ]);
    t.row(vec![
        "collector peak RSS (VmHWM)".into(),
        mib(rss),
        "".into(),
        "".into(),
        "".into(),
    ]);
    for ((which, f, target), gets) in [
        ("current week", &report.freshness, "p99 ≤ 1000 ms"),
        ("past weeks", &report.freshness_past_weeks, "p99 ≤ 5000 ms"),
    ]
    .into_iter()
    .zip(report.freshness_gets)
    {
        t.row(vec![
            format!(
                "freshness under this load, {which}, p50 / p99 ({} samples, {} GETs)",
                f.len(),
                thousands(gets as f64)
            ),
            format!("{} / {}", fmt_ms(f.p50_ms()), fmt_ms(f.p99_ms())),
            target.into(),
            "visible at commit".into(),
            "".into(),
        ]);
    }
    for (kind, p99) in AFTER_LOAD_QUERIES.iter().zip(search_p99_ms) {
        t.row(vec![
            format!(
                "search p99 right after the load, largest org, {} ({AFTER_LOAD_QUERIES_PER_KIND} queries)",
                kind.label()
            ),
            fmt_ms(p99),
            format!("≤ {} ms", kind.target_ms()),
            "".into(),
            "".into(),
        ]);
    }
    for ((kind, p99), cpu) in AFTER_LOAD_QUERIES
        .iter()
        .zip(idle_search_p99_ms)
        .zip(idle_search_cpu_ms)
    {
        t.row(vec![
            format!(
                "search p99 (collector CPU per query) once idle ({:.1} s after), largest org, {} ({IDLE_QUERIES_PER_KIND} queries)",
                idle_after.as_secs_f64(),
                kind.label()
            ),
            format!("{} ({cpu:.2} ms)", fmt_ms(p99)),
            format!("≤ {} ms", kind.target_ms()),
            "".into(),
            "".into(),
        ]);
    }
    t.row(vec![
        format!(
            "days holding records of {} (facet histogram)",
            corpus.orgs[0].id
        ),
        days_held.to_string(),
        format!(
            "{} spanned",
            (corpus.span_micros + DAY_MICROS - 1) / DAY_MICROS
        ),
        "".into(),
        "".into(),
    ]);
    let figures = IngestFigures {
        rate: report.rate(),
        cpu_ms_per_1000: cpu * 1e6 / corpus.total() as f64,
        rss_kib: rss,
        freshness_p99_ms: report.freshness.p99_ms(),
        freshness_past_p99_ms: report.freshness_past_weeks.p99_ms(),
        search_p99_ms,
        idle_search_p99_ms,
        idle_search_cpu_ms,
    };
    Ok((t, figures))
}

/// Search p99 of `per_kind` queries of each of [`AFTER_LOAD_QUERIES`] on the largest org (ten
/// more of each warm up first), and the collector's CPU per query of each kind in ms (what the
/// index costs to search, less moved by other tenants of a shared machine than a p99).
fn after_load_search(
    c: &Collector,
    corpus: &Corpus,
    per_kind: usize,
) -> Result<([f64; 3], [f64; 3])> {
    let (mut p99s, mut cpu) = ([f64::NAN; 3], [f64::NAN; 3]);
    for ((p99, cpu), kind) in p99s.iter_mut().zip(&mut cpu).zip(AFTER_LOAD_QUERIES) {
        let queries = search::make_queries(corpus, kind, OrgChoice::Largest, per_kind + 10, 42);
        let (warm, timed) = queries.split_at(10);
        search::run_collector(c, warm)?;
        let before = c.cpu_seconds()?;
        *p99 = search::run_collector(c, timed)?.0.p99_ms();
        *cpu = (c.cpu_seconds()? - before) * 1e3 / timed.len() as f64;
    }
    Ok((p99s, cpu))
}

fn mean_record_bytes(corpus: &Corpus) -> usize {
    let mut buf = Vec::new();
    corpus.ndjson_batch(0, &mut buf);
    buf.len() / corpus.batch_size
}

/// Benchmark 2, freshness: ack → searchable at a steady, paced rate, every batch sampled.
pub fn freshness(env: &Env, records: u64, rate: f64, size: IngestSize) -> Result<Vec<Table>> {
    let corpus = Corpus::last_ten_minutes(records, size.orgs, size.batch);
    let dir = temp_dir("codestax-bench-freshness-")?;
    let c = Collector::start(&env.collector_bin, dir.path(), &corpus.org_ids(), "")?;
    let load0 = load_average();
    progress(format!(
        "freshness: {} records at {rate} records/s",
        corpus.total()
    ));
    let report = send(
        &c,
        &corpus,
        LoadOptions {
            protocol: Protocol::Ndjson,
            clients: size.clients,
            pace: Some(rate),
            sample_every: 1,
            pre_encode: false,
        },
    )?;
    let load1 = load_average();
    c.stop()?;
    let f = &report.freshness;
    let mut t = Table::new(
        format!(
            "Freshness: ack → searchable (GET by id), default index.commit_interval, {} records at {} records/s in batches of {} (load {load0} → {load1})",
            thousands(corpus.total() as f64),
            thousands(rate),
            size.batch
        ),
        &[
            "samples",
            "p50",
            "p99",
            "max",
            "never found (60 s)",
            "target",
        ],
    );
    t.row(vec![
        f.len().to_string(),
        fmt_ms(f.p50_ms()),
        fmt_ms(f.p99_ms()),
        fmt_ms(f.max_ms()),
        report.never_found.to_string(),
        "p99 ≤ 1000 ms".into(),
    ]);
    Ok(vec![t])
}

/// Search sizes.
#[derive(Debug, Clone, Copy)]
pub struct SearchSize {
    pub records: u64,
    pub orgs: usize,
    pub largest: u64,
    pub queries: usize,
    pub clients: usize,
    pub batch: usize,
    pub days: i64,
}

struct SystemResults {
    /// (choice, kind) → (latencies, totals)
    queries: Vec<((OrgChoice, Kind), Latencies, Vec<u64>)>,
    walk: search::Walk,
    load_rate: f64,
    load_note: String,
    peak_rss_kib: Option<u64>,
    rss_after_load_kib: u64,
    bytes_per_record: String,
}

fn query_sets(corpus: &Corpus, n: usize) -> Vec<((OrgChoice, Kind), Vec<Query>)> {
    let mut sets = Vec::new();
    let choices: &[OrgChoice] = if corpus.orgs.len() > 1 {
        &[OrgChoice::Largest, OrgChoice::Others]
    } else {
        &[OrgChoice::Largest]
    };
    for &choice in choices {
        for kind in Kind::ALL {
            // Ten more for warm-up, not timed.
            sets.push((
                (choice, kind),
                search::make_queries(corpus, kind, choice, n + 10, 42),
            ));
        }
    }
    sets
}

/// A collector with a corpus loaded through the real ingest path, everything indexed.
struct LoadedCollector {
    c: Collector,
    /// Its data dir; dropped after `c`, which stops it.
    dir: TempDir,
    /// Records per second, first request to last ack.
    rate: f64,
    note: String,
    bytes_per_record: String,
    data_bytes: u64,
    index_bytes: f64,
    /// Load averages before and after.
    loads: (String, String),
}

/// Starts a collector with `extra_toml` in its config and sends it `corpus` (NDJSON over
/// `/api/v1/ingest`, `clients` clients, durable acks), then waits until all of it is indexed.
fn load_collector(
    env: &Env,
    corpus: &Corpus,
    clients: usize,
    extra_toml: &str,
    what: &str,
) -> Result<LoadedCollector> {
    let dir = temp_dir(&format!("codestax-bench-{what}-"))?;
    progress(format!(
        "{what}: starting the collector, {} orgs (largest {})",
        corpus.orgs.len(),
        corpus.orgs[0].records
    ));
    let c = Collector::start(
        &env.collector_bin,
        dir.path(),
        &corpus.org_ids(),
        extra_toml,
    )?;
    let load0 = load_average();
    let fsyncs0 = c.metric("codestax_collector_wal_fsyncs")?;
    let cpu0 = c.cpu_seconds()?;
    progress(format!(
        "{what}: loading {} records through /api/v1/ingest",
        corpus.total()
    ));
    let loaded = send(&c, corpus, LoadOptions::ndjson(clients, false))?;
    let fsyncs = c.metric("codestax_collector_wal_fsyncs")? - fsyncs0;
    let load_rss = c.peak_rss_kib()?;
    progress(format!(
        "{what}: loaded at {:.0} records/s; waiting for the index",
        loaded.rate()
    ));
    // Two key-creation records per org are in the index too.
    let expected = corpus.total() + 2 * corpus.orgs.len() as u64;
    let index_wait = c.wait_indexed(expected, Duration::from_secs(1800))?;
    let load_cpu = c.cpu_seconds()? - cpu0;
    // Queries are timed on the index as loaded, not against the merges the load left running.
    progress(format!("{what}: waiting for background merges"));
    let merges_wait = c.wait_idle(Duration::from_secs(600))?;
    let load1 = load_average();
    let data_bytes = dir_bytes(&c.data_dir);
    let index_bytes = c.metric("codestax_collector_index_bytes")?;
    let n = corpus.total() as f64;
    Ok(LoadedCollector {
        rate: loaded.rate(),
        note: format!(
            "NDJSON /api/v1/ingest, {clients} clients, durable acks; {:.0} fsyncs/s; collector CPU {:.0} ms per 1,000 records (merges after the load not included); all searchable {:.1} s after the last ack; background merges done {:.0} s after that; peak RSS while loading {}",
            fsyncs / loaded.elapsed.as_secs_f64(),
            load_cpu * 1e6 / n,
            index_wait.as_secs_f64(),
            merges_wait.as_secs_f64(),
            mib(load_rss)
        ),
        bytes_per_record: format!(
            "{:.0} (index {:.0}; data dir {} MiB)",
            data_bytes as f64 / n,
            index_bytes / n,
            data_bytes / (1024 * 1024)
        ),
        data_bytes,
        index_bytes,
        loads: (load0, load1),
        c,
        dir,
    })
}

/// Benchmarks 3 and 4, search over a large corpus loaded through the real ingest path, then the same in
/// PostgreSQL (COPY, then the usual indexes).
pub fn search(env: &Env, size: SearchSize) -> Result<Vec<Table>> {
    let corpus = Corpus::search(
        size.records,
        size.orgs,
        size.largest,
        size.batch,
        now_micros(),
        size.days,
    );
    let sets = query_sets(&corpus, size.queries);
    // Retention is widened so the janitor and the read-time expiry hide none of the corpus's
    // oldest records (the default is 90 days) while the queries run.
    let LoadedCollector {
        c,
        dir,
        rate,
        note,
        bytes_per_record,
        loads: (load0, load1),
        ..
    } = load_collector(
        env,
        &corpus,
        size.clients,
        "[retention]\ndefault_days = 3650\n",
        "search",
    )?;
    c.reset_peak_rss()?;
    let rss_after_load = proc_status_kib(c.pid(), "VmRSS:")?;
    progress("search: queries against the collector");
    let load2 = load_average();
    let mut ours = SystemResults {
        queries: Vec::new(),
        walk: search::Walk::default(),
        load_rate: rate,
        load_note: note,
        peak_rss_kib: None,
        rss_after_load_kib: rss_after_load,
        bytes_per_record,
    };
    for (key, queries) in &sets {
        let (warm, timed) = queries.split_at(10.min(queries.len()));
        search::run_collector(&c, warm)?;
        let (lat, totals) = search::run_collector(&c, timed)?;
        ours.queries.push((*key, lat, totals));
    }
    progress("search: cursor walk of the largest org");
    ours.walk = search::walk_collector(&c, &corpus.orgs[0].id)?;
    ours.peak_rss_kib = Some(c.peak_rss_kib()?);
    let load3 = load_average();
    c.stop()?;
    drop(dir);

    // The collector's figures first, so a failing baseline loses nothing.
    print_now(search_tables(
        &corpus,
        size,
        &ours,
        None,
        [&load0, &load1, &load2, &load3, "-"],
    ));
    let theirs = match env.postgres() {
        Some(bin) => match postgres_search(bin, &corpus, &sets, size) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("!! PostgreSQL baseline FAILED: {e}");
                return Err(e);
            }
        },
        None => None,
    };
    let load4 = load_average();
    Ok(search_tables(
        &corpus,
        size,
        &ours,
        theirs.as_ref(),
        [&load0, &load1, &load2, &load3, &load4],
    ))
}

fn print_now(tables: Vec<Table>) {
    println!("\n<!-- the collector's figures, before the baseline runs -->");
    for t in tables {
        println!("{}", t.render());
    }
}

fn search_tables(
    corpus: &Corpus,
    size: SearchSize,
    ours: &SystemResults,
    theirs: Option<&SystemResults>,
    loads: [&str; 5],
) -> Vec<Table> {
    let [load0, load1, load2, load3, load4] = loads;
    let rss_after_load = ours.rss_after_load_kib;

    let mut tables = Vec::new();
    let mut t = Table::new(
        format!(
            "Search corpus — {} records, {} orgs (largest {}), {} days; loaded through the real ingest path (load {load0} → {load1})",
            thousands(corpus.total() as f64),
            corpus.orgs.len(),
            thousands(corpus.orgs[0].records as f64),
            size.days
        ),
        &[
            "metric",
            "collector",
            "PostgreSQL",
            "collector ÷ PG",
            "notes",
        ],
    );
    t.row(vec![
        "load rate, records/s".into(),
        thousands(ours.load_rate),
        theirs
            .as_ref()
            .map_or("skipped".into(), |p| thousands(p.load_rate)),
        ratio(
            ours.load_rate,
            theirs.as_ref().map_or(f64::NAN, |p| p.load_rate),
        ),
        format!(
            "collector: {}. PG: {}",
            ours.load_note,
            theirs.as_ref().map_or("-", |p| p.load_note.as_str())
        ),
    ]);
    t.row(vec![
        "bytes on disk per record".into(),
        ours.bytes_per_record.clone(),
        theirs
            .as_ref()
            .map_or("skipped".into(), |p| p.bytes_per_record.clone()),
        "".into(),
        "collector: WAL segments are deleted once indexed".into(),
    ]);
    t.row(vec![
        "peak RSS during the queries and walk".into(),
        ours.peak_rss_kib.map_or("?".into(), mib),
        "not measured".into(),
        "".into(),
        format!(
            "collector RSS right after load {}; VmHWM reset before the queries",
            mib(rss_after_load)
        ),
    ]);
    tables.push(t);

    let mut q = Table::new(
        format!(
            "Search latency — {} timed queries per row, one at a time, timed at the client (load {load2} → {load3}; PG phase ended at {load4})",
            size.queries
        ),
        &[
            "query",
            "orgs",
            "collector p50",
            "collector p99",
            "target p99",
            "PG p50",
            "PG p99",
            "PG p99 ÷ collector p99",
            "totals agree",
        ],
    );
    for (i, ((choice, kind), lat, totals)) in ours.queries.iter().enumerate() {
        let pg = theirs.as_ref().map(|p| &p.queries[i]);
        let agree = pg.map_or("-".into(), |(_, _, pt)| {
            let same = totals.iter().zip(pt).filter(|(a, b)| a == b).count();
            format!("{same}/{}", totals.len())
        });
        q.row(vec![
            kind.label().into(),
            match choice {
                OrgChoice::Largest => {
                    format!("largest ({})", thousands(corpus.orgs[0].records as f64))
                }
                OrgChoice::Others => "the other orgs".into(),
            },
            fmt_ms(lat.p50_ms()),
            fmt_ms(lat.p99_ms()),
            format!("≤ {:.0} ms", kind.target_ms()),
            pg.map_or("skipped".into(), |(_, l, _)| fmt_ms(l.p50_ms())),
            pg.map_or("skipped".into(), |(_, l, _)| fmt_ms(l.p99_ms())),
            ratio(pg.map_or(f64::NAN, |(_, l, _)| l.p99_ms()), lat.p99_ms()),
            agree,
        ]);
    }
    tables.push(q);

    let mut w = Table::new(
        format!(
            "Deep cursor walk — every record of the largest org, newest first, limit={}",
            search::WALK_PAGE
        ),
        &[
            "system",
            "records",
            "pages",
            "seconds",
            "records/s",
            "page p50",
            "page p99",
            "collector ÷ PG",
        ],
    );
    let walk_row = |name: &str, walk: &search::Walk, r: String| {
        vec![
            name.to_string(),
            thousands(walk.records as f64),
            walk.pages.to_string(),
            format!("{:.1}", walk.elapsed.as_secs_f64()),
            thousands(walk.rate()),
            fmt_ms(walk.page.p50_ms()),
            fmt_ms(walk.page.p99_ms()),
            r,
        ]
    };
    let pg_walk_rate = theirs.as_ref().map_or(f64::NAN, |p| p.walk.rate());
    w.row(walk_row(
        "collector",
        &ours.walk,
        ratio(ours.walk.rate(), pg_walk_rate),
    ));
    if let Some(p) = &theirs {
        w.row(walk_row(
            "PostgreSQL (keyset on time, id)",
            &p.walk,
            "".into(),
        ));
    }
    tables.push(w);
    tables
}

/// PostgreSQL with `corpus` loaded the way the search corpus is: COPY in transactions of 100,000
/// rows from `clients` connections into the bare table, then the indexes and `VACUUM ANALYZE`.
struct LoadedPostgres {
    pg: Postgres,
    /// Records per second over all three steps.
    rate: f64,
    note: String,
    bytes_per_record: String,
}

fn load_postgres(
    bin: &std::path::Path,
    corpus: &Corpus,
    clients: usize,
    what: &str,
) -> Result<LoadedPostgres> {
    progress(format!("{what}: PostgreSQL: initdb and start"));
    let pg = Postgres::start(bin)?;
    pg.create_table(false)?;
    progress(format!(
        "{what}: PostgreSQL: COPY {} records",
        corpus.total()
    ));
    let copied = copy_into_postgres(&pg, corpus, clients, 100)?;
    progress(format!(
        "{what}: PostgreSQL: COPY at {:.0} records/s; building indexes",
        copied.rate()
    ));
    let t = Instant::now();
    pg.create_indexes()?;
    let index_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    pg.vacuum_analyze()?;
    let vacuum_secs = t.elapsed().as_secs_f64();
    let total_secs = copied.elapsed.as_secs_f64() + index_secs + vacuum_secs;
    let (rel_bytes, index_bytes) = pg.sizes()?;
    let n = corpus.total() as f64;
    Ok(LoadedPostgres {
        rate: n / total_secs,
        note: format!(
            "PostgreSQL {}: COPY ({clients} clients, 100k rows per transaction) at {} records/s into the bare table, then the 4 indexes in {:.0} s and VACUUM ANALYZE in {:.0} s; the rate counts all three",
            pg.version,
            thousands(copied.rate()),
            index_secs,
            vacuum_secs
        ),
        bytes_per_record: format!(
            "{:.0} (indexes {:.0}; cluster dir with WAL {} MiB)",
            rel_bytes as f64 / n,
            index_bytes as f64 / n,
            pg.data_dir_bytes() / (1024 * 1024)
        ),
        pg,
    })
}

fn postgres_search(
    bin: &std::path::Path,
    corpus: &Corpus,
    sets: &[((OrgChoice, Kind), Vec<Query>)],
    size: SearchSize,
) -> Result<SystemResults> {
    let LoadedPostgres {
        pg,
        rate,
        note,
        bytes_per_record,
    } = load_postgres(bin, corpus, size.clients, "search")?;
    let mut theirs = SystemResults {
        queries: Vec::new(),
        walk: search::Walk::default(),
        load_rate: rate,
        load_note: note,
        peak_rss_kib: None,
        rss_after_load_kib: 0,
        bytes_per_record,
    };
    progress("search: PostgreSQL: queries");
    for (key, queries) in sets {
        let (warm, timed) = queries.split_at(10.min(queries.len()));
        search::run_postgres(&pg, warm)?;
        let (lat, totals) = search::run_postgres(&pg, timed)?;
        theirs.queries.push((*key, lat, totals));
    }
    progress("search: PostgreSQL: cursor walk");
    theirs.walk = search::walk_postgres(&pg, &corpus.orgs[0].id)?;
    pg.stop();
    Ok(theirs)
}

/// Export sizes.
#[derive(Debug, Clone, Copy)]
pub struct ExportSize {
    /// Records of the one org exported.
    pub records: u64,
    pub clients: usize,
    pub batch: usize,
    pub days: i64,
    /// Times each export runs (each timed and printed).
    pub runs: usize,
}

/// One export case: a format and a filter, or none.
struct ExportCase {
    format: export::Format,
    filtered: bool,
}

/// What one collector export measured.
struct ExportRun {
    case: usize,
    streamed: export::Streamed,
    bench_cpu: f64,
    before: Memory,
    /// `VmHWM` after the export, the peak having been reset to the current RSS before it.
    hwm: u64,
    /// Maxima sampled every 50 ms during the export.
    during: Memory,
    loads: (String, String),
}

/// Export: one org's records loaded through the real ingest path, then exported through the
/// API in each format, unfiltered and filtered (rows/s, the collector's CPU and memory during
/// each); then PostgreSQL with the same records, `COPY (SELECT ...) TO STDOUT WITH CSV` under the
/// same filters.
pub fn export(env: &Env, size: ExportSize) -> Result<Vec<Table>> {
    use export::Format;
    let corpus = Corpus::search(
        size.records,
        1,
        size.records,
        size.batch,
        now_micros(),
        size.days,
    );
    let org = corpus.orgs[0].id.clone();
    let filter = export::Filter::for_corpus(&corpus);
    let cases = [
        ExportCase {
            format: Format::Csv,
            filtered: false,
        },
        ExportCase {
            format: Format::Ndjson,
            filtered: false,
        },
        ExportCase {
            format: Format::Json,
            filtered: false,
        },
        ExportCase {
            format: Format::Csv,
            filtered: true,
        },
        ExportCase {
            format: Format::Ndjson,
            filtered: true,
        },
    ];
    // Retention widened as for search: nothing of the corpus expires while it is exported.
    let loaded = load_collector(
        env,
        &corpus,
        size.clients,
        "[retention]\ndefault_days = 3650\n",
        "export",
    )?;
    let c = &loaded.c;
    let after_load = Memory::of(c.pid())?;
    let mut runs = Vec::new();
    for run in 0..size.runs.max(1) {
        for (i, case) in cases.iter().enumerate() {
            progress(format!(
                "export: {} {} (run {})",
                case.format.as_str(),
                if case.filtered {
                    filter.label()
                } else {
                    "unfiltered".into()
                },
                run + 1
            ));
            c.reset_peak_rss()?;
            let before = Memory::of(c.pid())?;
            let load0 = load_average();
            let bench_cpu0 = process_cpu_seconds(std::process::id())?;
            let sampler = MemorySampler::start(c.pid());
            let streamed =
                export::run_collector(c, &org, case.format, case.filtered.then_some(&filter))?;
            let during = sampler.finish();
            let bench_cpu = process_cpu_seconds(std::process::id())? - bench_cpu0;
            let hwm = c.peak_rss_kib()?;
            runs.push(ExportRun {
                case: i,
                streamed,
                bench_cpu,
                before,
                hwm,
                during,
                loads: (load0, load_average()),
            });
        }
    }
    let LoadedCollector {
        c,
        dir,
        rate,
        note,
        bytes_per_record,
        loads,
        ..
    } = loaded;
    c.stop()?;
    drop(dir);
    let ours = (rate, note, bytes_per_record, loads, after_load);
    print_now(export_tables(
        &corpus, &filter, size, &cases, &ours, &runs, None,
    ));

    let theirs = match env.postgres() {
        Some(bin) => {
            let loaded = load_postgres(bin, &corpus, size.clients, "export")?;
            let mut pg_runs = Vec::new();
            for run in 0..size.runs.max(1) {
                for filtered in [false, true] {
                    progress(format!(
                        "export: PostgreSQL COPY TO, {} (run {})",
                        if filtered {
                            filter.label()
                        } else {
                            "unfiltered".into()
                        },
                        run + 1
                    ));
                    let load0 = load_average();
                    let expected = (!filtered).then_some(corpus.total());
                    let s = export::run_postgres(
                        &loaded.pg,
                        &org,
                        filtered.then_some(&filter),
                        expected,
                    )?;
                    pg_runs.push((filtered, s, (load0, load_average())));
                }
            }
            let LoadedPostgres {
                pg,
                rate,
                note,
                bytes_per_record,
            } = loaded;
            pg.stop();
            Some(PostgresExports {
                rate,
                note,
                bytes_per_record,
                runs: pg_runs,
            })
        }
        None => None,
    };
    Ok(export_tables(
        &corpus,
        &filter,
        size,
        &cases,
        &ours,
        &runs,
        theirs.as_ref(),
    ))
}

/// The size and speed columns of one streamed export: rows, MB, first byte, seconds, rows/s, MB/s.
fn streamed_cells(s: &export::Streamed) -> [String; 6] {
    [
        thousands(s.rows as f64),
        format!("{:.0}", s.bytes as f64 / 1e6),
        fmt_ms(s.first_byte.as_secs_f64() * 1000.0),
        format!("{:.1}", s.elapsed.as_secs_f64()),
        thousands(s.rate()),
        format!("{:.0}", s.mb_per_s()),
    ]
}

/// The server's CPU during an export, in seconds and µs per row.
fn cpu_per_row(s: &export::Streamed) -> String {
    format!(
        "{:.1} ({:.1})",
        s.server_cpu,
        s.server_cpu * 1e6 / s.rows.max(1) as f64
    )
}

struct PostgresExports {
    rate: f64,
    note: String,
    bytes_per_record: String,
    /// (filtered, what the client read, load averages before and after)
    runs: Vec<(bool, export::Streamed, (String, String))>,
}

type OursLoad = (f64, String, String, (String, String), Memory);

fn export_tables(
    corpus: &Corpus,
    filter: &export::Filter,
    size: ExportSize,
    cases: &[ExportCase],
    ours: &OursLoad,
    runs: &[ExportRun],
    theirs: Option<&PostgresExports>,
) -> Vec<Table> {
    let (rate, note, bytes_per_record, (load0, load1), after_load) = ours;
    let mut tables = Vec::new();
    let mut t = Table::new(
        format!(
            "Export corpus — {} records of one org over {} days, loaded through the real ingest path (load {load0} → {load1})",
            thousands(corpus.total() as f64),
            size.days
        ),
        &["metric", "collector", "PostgreSQL", "notes"],
    );
    t.row(vec![
        "load rate, records/s".into(),
        thousands(*rate),
        theirs.map_or("skipped".into(), |p| thousands(p.rate)),
        format!(
            "collector: {note}. PG: {}",
            theirs.map_or("-", |p| p.note.as_str())
        ),
    ]);
    t.row(vec![
        "bytes on disk per record".into(),
        bytes_per_record.clone(),
        theirs.map_or("skipped".into(), |p| p.bytes_per_record.clone()),
        "".into(),
    ]);
    t.row(vec![
        "collector memory once loaded".into(),
        format!(
            "VmRSS {} = RssAnon {} + RssFile {} (+ shmem); VmHWM {}",
            mib(after_load.vm_rss),
            mib(after_load.rss_anon),
            mib(after_load.rss_file),
            mib(after_load.vm_hwm)
        ),
        "not measured".into(),
        "RssFile: pages of mmapped index files, which the kernel reclaims at will".into(),
    ]);
    tables.push(t);

    let label = |case: &ExportCase| {
        if case.filtered {
            filter.label()
        } else {
            "all".into()
        }
    };
    let pg_rate = |filtered: bool| {
        theirs
            .and_then(|p| {
                p.runs
                    .iter()
                    .filter(|(f, _, _)| *f == filtered)
                    .map(|(_, s, _)| s.rate())
                    .reduce(f64::max)
            })
            .unwrap_or(f64::NAN)
    };
    let mut r = Table::new(
        "Export throughput — one export at a time, timed at the client from the request to the last byte",
        &[
            "system",
            "format",
            "filter",
            "rows",
            "MB",
            "first byte",
            "seconds",
            "rows/s",
            "MB/s",
            "target",
            "server CPU, s (µs per row): collector process, PG backend",
            "bench client CPU, s",
            "÷ PG rows/s (best PG run)",
            "load",
        ],
    );
    for run in runs {
        let case = &cases[run.case];
        let s = &run.streamed;
        let mut row = vec!["collector".into(), case.format.as_str().into(), label(case)];
        row.extend(streamed_cells(s));
        row.extend([
            "≥ 200,000".into(),
            cpu_per_row(s),
            format!("{:.1}", run.bench_cpu),
            ratio(s.rate(), pg_rate(case.filtered)),
            format!("{} → {}", run.loads.0, run.loads.1),
        ]);
        r.row(row);
    }
    if let Some(p) = theirs {
        for (filtered, s, (l0, l1)) in &p.runs {
            let mut row = vec![
                "PostgreSQL COPY TO STDOUT WITH CSV".into(),
                "csv".into(),
                if *filtered {
                    filter.label()
                } else {
                    "all".into()
                },
            ];
            row.extend(streamed_cells(s));
            row.extend([
                "".into(),
                cpu_per_row(s),
                "".into(),
                "".into(),
                format!("{l0} → {l1}"),
            ]);
            r.row(row);
        }
    }
    tables.push(r);

    let mut m = Table::new(
        "Collector memory during each export — KiB figures from /proc/PID/status; VmHWM reset (clear_refs 5) to the current RSS just before each export; maxima sampled every 50 ms",
        &[
            "format",
            "filter",
            "VmRSS before",
            "VmHWM after (peak)",
            "peak − before",
            "RssAnon before → max",
            "RssAnon growth",
            "RssFile before → max",
        ],
    );
    for run in runs {
        let case = &cases[run.case];
        m.row(vec![
            case.format.as_str().into(),
            label(case),
            mib(run.before.vm_rss),
            mib(run.hwm),
            mib(run.hwm.saturating_sub(run.before.vm_rss)),
            format!(
                "{} → {}",
                mib(run.before.rss_anon),
                mib(run.during.rss_anon)
            ),
            mib(run.during.rss_anon.saturating_sub(run.before.rss_anon)),
            format!(
                "{} → {}",
                mib(run.before.rss_file),
                mib(run.during.rss_file)
            ),
        ]);
    }
    tables.push(m);
    tables
}

/// Janitor sizes and windows.
#[derive(Debug, Clone)]
pub struct JanitorSize {
    pub records: u64,
    pub orgs: usize,
    pub largest: u64,
    pub clients: usize,
    pub batch: usize,
    /// Days the corpus spans, ending now.
    pub days: i64,
    /// `retention.default_days` once loaded (the product's default is 90).
    pub keep_days: u32,
    /// The shorter window the second-largest org (on the enterprise plan) gets in the second run.
    pub short_days: u32,
    /// `retention.janitor_interval` after the load (its first run comes after
    /// min(interval, 10 s)).
    pub interval: String,
}

/// The index as the collector reports it, and the data dir as `du` sees it.
#[derive(Debug, Clone, Copy, Default)]
struct DiskState {
    docs: f64,
    index_bytes: f64,
    /// (files' sizes, blocks allocated)
    data_dir: (u64, u64),
}

impl DiskState {
    fn of(c: &Collector) -> Result<DiskState> {
        Ok(DiskState {
            docs: c.metric("codestax_collector_index_documents")?,
            index_bytes: c.metric("codestax_collector_index_bytes")?,
            data_dir: dir_usage(&c.data_dir),
        })
    }
}

/// One janitor run, read from the collector's metrics.
struct JanitorRun {
    label: String,
    config: String,
    /// SIGTERM → ready again.
    restart: Duration,
    /// Ready → the run's metrics show it finished.
    waited: Duration,
    /// `codestax_collector_retention_janitor_last_run_duration_seconds`.
    duration: f64,
    /// `codestax_collector_retention_records_deleted_total` by org.
    deleted: Vec<(String, u64)>,
    partitions_dropped: f64,
    before: DiskState,
    after: DiskState,
    /// Records the index should hold after the run, from the corpus and each org's cutoff.
    expected_left: u64,
    loads: (String, String),
}

/// Restarts the collector with `extra_toml` and waits for the janitor's first run.
fn janitor_run(
    c: &mut Collector,
    corpus: &Corpus,
    extra_toml: &str,
    cutoff_days: &dyn Fn(&str) -> u32,
    label: &str,
) -> Result<JanitorRun> {
    let before = DiskState::of(c)?;
    let load0 = load_average();
    progress(format!("janitor: {label}: restarting the collector"));
    let t = Instant::now();
    c.restart(extra_toml)?;
    let restart = t.elapsed();
    let t = Instant::now();
    // The first scrape that shows the run is the one read: a short interval may start the next.
    let text = loop {
        let text = c.metrics()?;
        let series = metric_series(&text, "codestax_collector_retention_janitor_runs_total");
        let runs = |result: &str| {
            series
                .iter()
                .filter(|(l, _)| *l == format!("result=\"{result}\""))
                .map(|(_, v)| v)
                .sum::<f64>()
        };
        if runs("error") > 0.0 {
            return Err(BenchError::Collector(
                "the retention janitor failed (see the collector's log)".into(),
            ));
        }
        if runs("ok") >= 1.0 {
            break text;
        }
        if t.elapsed() > Duration::from_secs(3600) {
            return Err(BenchError::Collector(
                "the janitor did not run within an hour of the restart".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let waited = t.elapsed();
    let duration = crate::collector::metric_value(
        &text,
        "codestax_collector_retention_janitor_last_run_duration_seconds",
    )
    .unwrap_or(f64::NAN);
    let finished = crate::collector::metric_value(
        &text,
        "codestax_collector_retention_janitor_last_run_timestamp_seconds",
    )
    .unwrap_or(f64::NAN);
    let deleted: Vec<(String, u64)> =
        metric_series(&text, "codestax_collector_retention_records_deleted_total")
            .into_iter()
            .map(|(l, v)| {
                let org = l
                    .strip_prefix("org=\"")
                    .and_then(|o| o.strip_suffix('"'))
                    .unwrap_or(&l)
                    .to_string();
                (org, v as u64)
            })
            .collect();
    let partitions_dropped = crate::collector::metric_value(
        &text,
        "codestax_collector_retention_partitions_dropped_total",
    )
    .unwrap_or(0.0);
    // The run judged expiry by its own `now`, about when it started.
    let now = ((finished - duration) * 1e6) as i64;
    let mut expected_left = 2 * corpus.orgs.len() as u64;
    for (b, batch) in corpus.batches.iter().enumerate() {
        let org = &corpus.orgs[batch.org as usize].id;
        let cutoff = now - i64::from(cutoff_days(org)) * DAY_MICROS;
        expected_left += (0..corpus.batch_size)
            .filter(|&j| corpus.time(b, j) >= cutoff)
            .count() as u64;
    }
    // The run counted only what it found: any record the index reports now is what it kept.
    let after = DiskState::of(c)?;
    Ok(JanitorRun {
        label: label.to_string(),
        config: extra_toml.trim().replace('\n', "; "),
        restart,
        waited,
        duration,
        deleted,
        partitions_dropped,
        before,
        after,
        expected_left,
        loads: (load0, load_average()),
    })
}

/// Janitor: `days` of records over several orgs loaded with retention widened (nothing expires
/// while loading), then three restarts, each followed by the janitor's first run, timed by its
/// own metrics: retention narrowed to `keep_days` (the oldest `days - keep_days` days go: whole
/// partitions dropped, per-org deletes in the partition the cutoff falls into); one enterprise
/// org narrowed to `short_days` (per-org deletes: the other orgs keep their records in those
/// partitions); and the same config again (a run that finds only what expired since, at the
/// boundary).
pub fn janitor(env: &Env, size: JanitorSize) -> Result<Vec<Table>> {
    let corpus = Corpus::search(
        size.records,
        size.orgs,
        size.largest,
        size.batch,
        now_micros(),
        size.days,
    );
    // The second-largest org is on the enterprise plan, so it can have its own window.
    let short_org = corpus.orgs.get(1).map(|o| o.id.clone());
    let orgs_toml = |days: Option<u32>| match &short_org {
        Some(id) => format!(
            "[[orgs]]\nid = \"{id}\"\nplan = \"enterprise\"\n{}",
            days.map_or(String::new(), |d| format!("retention_days = {d}\n"))
        ),
        None => String::new(),
    };
    let loaded = load_collector(
        env,
        &corpus,
        size.clients,
        &format!("[retention]\ndefault_days = 3650\n{}", orgs_toml(None)),
        "janitor",
    )?;
    let (load0, load1) = loaded.loads.clone();
    let (rate, note) = (loaded.rate, loaded.note.clone());
    let (data_bytes, index_bytes) = (loaded.data_bytes, loaded.index_bytes);
    let LoadedCollector { mut c, dir, .. } = loaded;
    let retention = |short: Option<u32>| {
        format!(
            "[retention]\ndefault_days = {}\njanitor_interval = \"{}\"\n{}",
            size.keep_days,
            size.interval,
            orgs_toml(short)
        )
    };
    let keep = size.keep_days;
    let mut runs = Vec::new();
    runs.push(janitor_run(
        &mut c,
        &corpus,
        &retention(None),
        &|_| keep,
        &format!(
            "1. retention {} → {} days for every org",
            3650, size.keep_days
        ),
    )?);
    if let Some(short) = &short_org {
        let days = size.short_days;
        runs.push(janitor_run(
            &mut c,
            &corpus,
            &retention(Some(days)),
            &|org| if org == short { days } else { keep },
            &format!(
                "2. enterprise org {short}: {} → {days} days",
                size.keep_days
            ),
        )?);
    }
    let days = size.short_days;
    let short = short_org.clone().unwrap_or_default();
    runs.push(janitor_run(
        &mut c,
        &corpus,
        &retention(short_org.as_ref().map(|_| days)),
        &|org| if org == short { days } else { keep },
        "3. the same config again: only what expired since",
    )?);
    c.stop()?;
    drop(dir);

    let mut tables = Vec::new();
    let mut t = Table::new(
        format!(
            "Janitor corpus — {} records, {} orgs (largest {}), {} days, loaded through the real ingest path with retention widened to 3650 days (load {load0} → {load1})",
            thousands(corpus.total() as f64),
            corpus.orgs.len(),
            thousands(corpus.orgs[0].records as f64),
            size.days
        ),
        &["metric", "value"],
    );
    t.row(vec!["load rate, records/s".into(), thousands(rate)]);
    t.row(vec!["load".into(), note]);
    t.row(vec![
        "after the load".into(),
        format!(
            "index {} MiB; data dir {} MiB (files' sizes)",
            (index_bytes / 1048576.0).round(),
            data_bytes / (1024 * 1024)
        ),
    ]);
    tables.push(t);

    let mut r = Table::new(
        "Janitor runs — each the first run after a restart with a new retention config (about 10 s after start, or one interval if shorter), timed by its own metric",
        &[
            "run",
            "records deleted (by org)",
            "partitions dropped whole",
            "run duration",
            "index before → after",
            "data dir du before → after",
            "records left (expected)",
            "restart; ready → run done",
            "load",
        ],
    );
    for run in &runs {
        let total: u64 = run.deleted.iter().map(|(_, n)| n).sum();
        let by_org: Vec<String> = run
            .deleted
            .iter()
            .map(|(o, n)| format!("{o} {}", thousands(*n as f64)))
            .collect();
        r.row(vec![
            run.label.clone(),
            if total == 0 {
                "0".into()
            } else {
                format!("{} ({})", thousands(total as f64), by_org.join(", "))
            },
            format!("{:.0}", run.partitions_dropped),
            format!("{:.2} s", run.duration),
            format!(
                "{} → {} MiB",
                (run.before.index_bytes / 1048576.0).round(),
                (run.after.index_bytes / 1048576.0).round()
            ),
            format!(
                "{} → {} MiB",
                run.before.data_dir.1 / (1024 * 1024),
                run.after.data_dir.1 / (1024 * 1024)
            ),
            format!(
                "{} ({})",
                thousands(run.after.docs),
                thousands(run.expected_left as f64)
            ),
            format!(
                "{:.1} s; {:.1} s",
                run.restart.as_secs_f64(),
                run.waited.as_secs_f64()
            ),
            format!("{} → {}", run.loads.0, run.loads.1),
        ]);
    }
    tables.push(r);
    let mut cfg = Table::new("Janitor runs — the config of each", &["run", "config"]);
    for run in &runs {
        cfg.row(vec![run.label.clone(), format!("`{}`", run.config)]);
    }
    tables.push(cfg);
    Ok(tables)
}
