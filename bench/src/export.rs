//! The export workload, the same for both systems: every record of one org, newest first, as a
//! stream the client reads to its end, unfiltered and under one filter (a category and a 30-day
//! range). The collector answers `GET /api/v1/orgs/{org}/audit-log/export`; PostgreSQL
//! `COPY (SELECT ... ORDER BY time DESC, id DESC) TO STDOUT WITH CSV`. Both are timed at the
//! client, from the request to the last byte, and their rows counted from the bytes.

use crate::collector::{Collector, http_client, process_cpu_seconds};
use crate::data::{CATEGORIES, Corpus, DAY_MICROS, rfc3339};
use crate::error::{BenchError, Result};
use crate::pg::Postgres;
use crate::search::enc;
use chrono::{DateTime, Utc};
use std::io::Read;
use std::time::{Duration, Instant};

/// The filter of the filtered case: `category=C&since=..&until=..`.
#[derive(Debug, Clone)]
pub struct Filter {
    pub category: &'static str,
    pub since: i64,
    pub until: i64,
}

impl Filter {
    /// A category present in about a third of the records (`scan`), and the 30 days in the
    /// middle of the corpus's span (all of it when shorter).
    pub fn for_corpus(corpus: &Corpus) -> Filter {
        let window = (30 * DAY_MICROS).min(corpus.span_micros);
        let since = corpus.start_micros + (corpus.span_micros - window) / 2;
        Filter {
            category: CATEGORIES[2],
            since,
            until: since + window,
        }
    }

    pub fn label(&self) -> String {
        format!(
            "category={} + {} days",
            self.category,
            (self.until - self.since) / DAY_MICROS
        )
    }
}

/// The collector's export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
    Json,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
            Format::Json => "json",
        }
    }

    /// Rows in a body with `newlines` line ends. Generated records hold no newline, so in CSV
    /// each row is one line after the header; NDJSON one line per record and its proof line;
    /// JSON `[`, one line per record, `]` (its proof follows on that line).
    fn rows(self, newlines: u64) -> u64 {
        match self {
            Format::Csv => newlines.saturating_sub(1),
            Format::Ndjson => newlines.saturating_sub(1),
            Format::Json => newlines.saturating_sub(2),
        }
    }
}

/// One export as the client saw it.
#[derive(Debug, Clone, Default)]
pub struct Streamed {
    pub rows: u64,
    pub bytes: u64,
    /// Request sent → first body bytes read.
    pub first_byte: Duration,
    /// Request sent → last byte read.
    pub elapsed: Duration,
    /// CPU the server spent meanwhile (user + system): the collector process, or the PostgreSQL
    /// backend that ran the COPY.
    pub server_cpu: f64,
}

impl Streamed {
    pub fn rate(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64()
    }

    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

/// Reads `body` to its end in 1 MiB reads, counting bytes and line ends.
fn drain(mut body: impl Read, started: Instant) -> std::io::Result<(u64, u64, Duration)> {
    let mut buf = vec![0u8; 1 << 20];
    let (mut bytes, mut newlines) = (0u64, 0u64);
    let mut first_byte = None;
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            break;
        }
        first_byte.get_or_insert_with(|| started.elapsed());
        bytes += n as u64;
        newlines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
    Ok((bytes, newlines, first_byte.unwrap_or_default()))
}

/// The collector's export path for `org` in `format`, filtered or not.
pub fn collector_path(org: &str, format: Format, filter: Option<&Filter>) -> String {
    let mut path = format!(
        "/api/v1/orgs/{org}/audit-log/export?format={}",
        format.as_str()
    );
    if let Some(f) = filter {
        path.push_str(&format!(
            "&category={}&since={}&until={}",
            f.category,
            enc(&rfc3339(f.since)),
            enc(&rfc3339(f.until))
        ));
    }
    path
}

/// One export from the collector, read to its end. Checks that the rows read are as many as the
/// collector announced (`x-codestax-export-total`).
pub fn run_collector(
    c: &Collector,
    org: &str,
    format: Format,
    filter: Option<&Filter>,
) -> Result<Streamed> {
    let client = http_client()?;
    let path = collector_path(org, format, filter);
    let what = || format!("GET {path}");
    let cpu0 = c.cpu_seconds()?;
    let started = Instant::now();
    let r = client
        .get(c.url(&path))
        .bearer_auth(&c.keys(org).reader)
        .send()
        .map_err(|e| BenchError::http(what(), e))?;
    let status = r.status();
    if !status.is_success() {
        let text = r.text().unwrap_or_default();
        return Err(BenchError::http(what(), format!("{status}: {text}")));
    }
    let announced: Option<u64> = r
        .headers()
        .get("x-codestax-export-total")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let (bytes, newlines, first_byte) =
        drain(r, started).map_err(|e| BenchError::http(what(), e))?;
    let elapsed = started.elapsed();
    let server_cpu = c.cpu_seconds()? - cpu0;
    let rows = format.rows(newlines);
    if announced != Some(rows) {
        return Err(BenchError::http(
            what(),
            format!("read {rows} rows, the collector announced {announced:?}"),
        ));
    }
    Ok(Streamed {
        rows,
        bytes,
        first_byte,
        elapsed,
        server_cpu,
    })
}

/// The columns of the collector's CSV export, from the bench's table.
const CSV_SELECT: &str = "time, actor_name, actor_email, action, category, target_kind, target_id, target_name, repository, outcome, metadata->>'ip', metadata";

fn ts(micros: i64) -> String {
    // A literal PostgreSQL parses exactly: RFC 3339 with microseconds, UTC.
    let t: DateTime<Utc> = DateTime::from_timestamp_micros(micros).unwrap_or_default();
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The export's SQL: the CSV export's columns, the same filter, the same order.
pub fn postgres_sql(org: &str, filter: Option<&Filter>) -> String {
    let mut sql = format!("SELECT {CSV_SELECT} FROM audit_log WHERE org_id = '{org}'");
    if let Some(f) = filter {
        sql.push_str(&format!(
            " AND category = '{}' AND time >= '{}' AND time < '{}'",
            f.category,
            ts(f.since),
            ts(f.until)
        ));
    }
    sql.push_str(" ORDER BY time DESC, id DESC");
    format!("COPY ({sql}) TO STDOUT WITH CSV")
}

/// One `COPY ... TO STDOUT WITH CSV` from PostgreSQL, read to its end; `expected` rows, if
/// given, must come. Its CPU is the backend's (COPY of a query runs in the one backend: no
/// parallel workers).
pub fn run_postgres(
    pg: &Postgres,
    org: &str,
    filter: Option<&Filter>,
    expected: Option<u64>,
) -> Result<Streamed> {
    let mut client = pg.connect()?;
    let backend: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .map_err(BenchError::sql("backend pid"))?
        .get(0);
    let backend = backend as u32;
    let sql = postgres_sql(org, filter);
    let cpu0 = process_cpu_seconds(backend)?;
    let started = Instant::now();
    let reader = client
        .copy_out(sql.as_str())
        .map_err(BenchError::sql("COPY TO STDOUT"))?;
    let (bytes, newlines, first_byte) =
        drain(reader, started).map_err(|e| BenchError::Postgres(format!("COPY TO: {e}")))?;
    let elapsed = started.elapsed();
    let server_cpu = process_cpu_seconds(backend)? - cpu0;
    if let Some(n) = expected
        && n != newlines
    {
        return Err(BenchError::Postgres(format!(
            "COPY TO returned {newlines} rows, expected {n}"
        )));
    }
    Ok(Streamed {
        rows: newlines,
        bytes,
        first_byte,
        elapsed,
        server_cpu,
    })
}
