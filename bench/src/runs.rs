//! The benchmarks of issue 3, each a function that runs one end to end and returns its tables:
//! ingest with durable acks, freshness, search over a large corpus; each with the PostgreSQL
//! baseline in the same run unless it is unavailable (then said loudly in the output).

use crate::cleanup::TempDir;
use crate::collector::{Collector, dir_bytes, proc_status_kib, process_cpu_seconds};
use crate::data::Corpus;
use crate::error::{BenchError, Result};
use crate::load::{LoadOptions, LoadReport, Protocol, copy_into_postgres, send};
use crate::pg::Postgres;
use crate::search::{self, Kind, OrgChoice, Query};
use crate::stats::{Latencies, Table, fmt_ms, load_average, ratio, thousands};
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

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn temp_dir(prefix: &str) -> Result<TempDir> {
    TempDir::new(prefix).map_err(|e| BenchError::io("create a temp dir", std::env::temp_dir(), e))
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn progress(msg: impl AsRef<str>) {
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
    /// 0: records of the last 10 minutes. Otherwise record times are scattered at random over
    /// this many days before now.
    pub spread_days: i64,
}

/// Benchmark 1, ingest with durable acks: records/s, fsyncs/s, CPU, peak RSS (and freshness
/// under that load), for each of `protocols`, with the PostgreSQL baseline once.
pub fn ingest(env: &Env, size: IngestSize, protocols: &[Protocol]) -> Result<Vec<Table>> {
    let corpus = Corpus::recent(
        size.records,
        size.orgs,
        size.batch,
        now_micros(),
        600_000_000,
    );
    let pg = match env.postgres() {
        Some(bin) => {
            progress(
                "ingest: PostgreSQL baseline (COPY, one transaction per batch, indexed table)",
            );
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
    let mut tables = Vec::new();
    for &protocol in protocols {
        tables.push(ingest_one(env, &corpus, size, protocol, pg.as_ref())?);
    }
    Ok(tables)
}

fn ingest_one(
    env: &Env,
    corpus: &Corpus,
    size: IngestSize,
    protocol: Protocol,
    pg: Option<&(LoadReport, String)>,
) -> Result<Table> {
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
        "[retention]\ndefault_days = 3650\n",
    )?;
    let fsyncs0 = c.metric("codestax_collector_wal_fsyncs")?;
    let cpu0 = c.cpu_seconds()?;
    let bench_cpu0 = process_cpu_seconds(std::process::id())?;
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
        },
    )?;
    let fsyncs = c.metric("codestax_collector_wal_fsyncs")? - fsyncs0;
    let load1 = load_average();
    let rss = c.peak_rss_kib()?;
    // Indexing goes on after the last ack: count the CPU until everything is searchable.
    c.wait_indexed(corpus.total(), Duration::from_secs(600))?;
    let cpu = c.cpu_seconds()? - cpu0;
    let bench_cpu = process_cpu_seconds(std::process::id())? - bench_cpu0;
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
                    corpus.span_micros / 86_400_000_000
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
    t.row(vec![
        format!(
            "freshness under this load, p50 / p99 ({} samples)",
            report.freshness.len()
        ),
        format!(
            "{} / {}",
            fmt_ms(report.freshness.p50_ms()),
            fmt_ms(report.freshness.p99_ms())
        ),
        "p99 ≤ 1000 ms".into(),
        "visible at commit".into(),
        "".into(),
    ]);
    Ok(t)
}

fn mean_record_bytes(corpus: &Corpus) -> usize {
    let mut buf = Vec::new();
    corpus.ndjson_batch(0, &mut buf);
    buf.len() / corpus.batch_size
}

/// Benchmark 2, freshness: ack → searchable at a steady, paced rate, every batch sampled.
pub fn freshness(env: &Env, records: u64, rate: f64, size: IngestSize) -> Result<Vec<Table>> {
    let corpus = Corpus::recent(records, size.orgs, size.batch, now_micros(), 600_000_000);
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
        },
    )?;
    let load1 = load_average();
    c.stop()?;
    let f = &report.freshness;
    let mut t = Table::new(
        format!(
            "Freshness: ack → searchable (GET by id), default index.commit_interval (500 ms), {} records at {} records/s in batches of {} (load {load0} → {load1})",
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
    let dir = temp_dir("codestax-bench-search-")?;
    progress(format!(
        "search: starting the collector, {} orgs (largest {})",
        corpus.orgs.len(),
        corpus.orgs[0].records
    ));
    // Retention is widened so the janitor and the read-time expiry hide none of the corpus's
    // oldest records (the default is 90 days) while the queries run.
    let c = Collector::start(
        &env.collector_bin,
        dir.path(),
        &corpus.org_ids(),
        "[retention]\ndefault_days = 3650\n",
    )?;
    let load0 = load_average();
    let fsyncs0 = c.metric("codestax_collector_wal_fsyncs")?;
    let cpu0 = c.cpu_seconds()?;
    progress(format!(
        "search: loading {} records through /api/v1/ingest",
        corpus.total()
    ));
    let loaded = send(
        &c,
        &corpus,
        LoadOptions {
            protocol: Protocol::Ndjson,
            clients: size.clients,
            pace: None,
            sample_every: 0,
        },
    )?;
    let fsyncs = c.metric("codestax_collector_wal_fsyncs")? - fsyncs0;
    let load_rss = c.peak_rss_kib()?;
    progress(format!(
        "search: loaded at {:.0} records/s; waiting for the index",
        loaded.rate()
    ));
    // Two key-creation records per org are in the index too.
    let expected = corpus.total() + 2 * corpus.orgs.len() as u64;
    let index_wait = c.wait_indexed(expected, Duration::from_secs(1800))?;
    let load_cpu = c.cpu_seconds()? - cpu0;
    let load1 = load_average();
    let data_bytes = dir_bytes(&c.data_dir);
    let index_bytes = c.metric("codestax_collector_index_bytes")?;
    c.reset_peak_rss()?;
    let rss_after_load = proc_status_kib(c.pid(), "VmRSS:")?;
    progress("search: queries against the collector");
    let load2 = load_average();
    let mut ours = SystemResults {
        queries: Vec::new(),
        walk: search::Walk::default(),
        load_rate: loaded.rate(),
        load_note: format!(
            "NDJSON /api/v1/ingest, {} clients, durable acks; {:.0} fsyncs/s; collector CPU {:.0} ms per 1,000 records; all searchable {:.1} s after the last ack; peak RSS while loading {}",
            size.clients,
            fsyncs / loaded.elapsed.as_secs_f64(),
            load_cpu * 1e6 / corpus.total() as f64,
            index_wait.as_secs_f64(),
            mib(load_rss)
        ),
        peak_rss_kib: None,
        rss_after_load_kib: rss_after_load,
        bytes_per_record: format!(
            "{:.0} (index {:.0}; data dir {} MiB)",
            data_bytes as f64 / corpus.total() as f64,
            index_bytes / corpus.total() as f64,
            data_bytes / (1024 * 1024)
        ),
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

fn postgres_search(
    bin: &std::path::Path,
    corpus: &Corpus,
    sets: &[((OrgChoice, Kind), Vec<Query>)],
    size: SearchSize,
) -> Result<SystemResults> {
    progress("search: PostgreSQL: initdb and start");
    let pg = Postgres::start(bin)?;
    pg.create_table(false)?;
    progress(format!(
        "search: PostgreSQL: COPY {} records",
        corpus.total()
    ));
    let copied = copy_into_postgres(&pg, corpus, size.clients, 100)?;
    progress(format!(
        "search: PostgreSQL: COPY at {:.0} records/s; building indexes",
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
    let mut theirs = SystemResults {
        queries: Vec::new(),
        walk: search::Walk::default(),
        load_rate: n / total_secs,
        load_note: format!(
            "PostgreSQL {}: COPY ({} clients, 100k rows per transaction) at {} records/s into the bare table, then the 4 indexes in {:.0} s and VACUUM ANALYZE in {:.0} s; the rate counts all three",
            pg.version,
            size.clients,
            thousands(copied.rate()),
            index_secs,
            vacuum_secs
        ),
        peak_rss_kib: None,
        rss_after_load_kib: 0,
        bytes_per_record: format!(
            "{:.0} (indexes {:.0}; cluster dir with WAL {} MiB)",
            rel_bytes as f64 / n,
            index_bytes as f64 / n,
            pg.data_dir_bytes() / (1024 * 1024)
        ),
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
