//! The search workload, the same for both systems: filtered queries (category + user + 30-day
//! range), full-text queries (a common word; a unique request id), facets over 30 days, and a
//! deep cursor walk. Each system runs the same list of queries, one at a time from one client,
//! timed from the client (request sent → response read in full).

use crate::collector::{Collector, http_client};
use crate::data::{CATEGORIES, Corpus, DAY_MICROS, Rng, VOCAB, rfc3339};
use crate::error::{BenchError, Result};
use crate::pg::{Postgres, RECORD_COLUMNS};
use crate::stats::Latencies;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Records per page of the first-page queries (the API's default).
pub const PAGE: usize = 50;
/// Records per page of the cursor walk (the API's maximum).
pub const WALK_PAGE: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `category=C&user=U&since=..&until=..` (30 days), first page.
    Filtered,
    /// `q=<a vocabulary word>` (in about 4 % of records), first page.
    TextCommon,
    /// `q=<one record's request id>` (one match), first page.
    TextNeedle,
    /// `/facets?since=..&until=..` (30 days): top values and a day histogram.
    Facets,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Filtered,
        Kind::TextCommon,
        Kind::TextNeedle,
        Kind::Facets,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Filtered => "filtered: category + user + 30 days",
            Kind::TextCommon => "full-text: common word",
            Kind::TextNeedle => "full-text: request id (1 match)",
            Kind::Facets => "facets: 30 days",
        }
    }

    /// The target for the p99, in ms.
    pub fn target_ms(self) -> f64 {
        match self {
            Kind::Filtered => 50.0,
            Kind::TextCommon | Kind::TextNeedle => 100.0,
            Kind::Facets => 150.0,
        }
    }
}

/// One query.
#[derive(Debug, Clone)]
pub struct Query {
    pub kind: Kind,
    pub org: String,
    pub category: &'static str,
    pub user: String,
    pub since: i64,
    pub until: i64,
    pub term: String,
}

/// Which orgs the queries ask about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrgChoice {
    /// The largest org only.
    Largest,
    /// The others, uniformly.
    Others,
}

/// `n` queries of `kind`, drawn deterministically from `seed`.
pub fn make_queries(
    corpus: &Corpus,
    kind: Kind,
    choice: OrgChoice,
    n: usize,
    seed: u64,
) -> Vec<Query> {
    let mut rng = Rng::new(seed ^ (kind as u64) << 8 ^ (choice as u64) << 16);
    let mut batches_of: HashMap<usize, Vec<usize>> = HashMap::new();
    let end = corpus.start_micros + corpus.span_micros;
    let others: Vec<usize> = (1..corpus.orgs.len())
        .filter(|&o| corpus.orgs[o].records > 0)
        .collect();
    (0..n)
        .map(|_| {
            let org = match choice {
                OrgChoice::Largest => 0,
                OrgChoice::Others if !others.is_empty() => rng.pick(&others),
                OrgChoice::Others => 0,
            };
            let window = (30 * DAY_MICROS).min(corpus.span_micros);
            let since =
                corpus.start_micros + rng.below((corpus.span_micros - window).max(1) as u64) as i64;
            let term = match kind {
                Kind::TextCommon => rng.pick(VOCAB).to_string(),
                Kind::TextNeedle => {
                    let batches = batches_of
                        .entry(org)
                        .or_insert_with(|| corpus.batches_of(org));
                    let b = rng.pick(batches);
                    let j = rng.below(corpus.batch_size as u64) as usize;
                    corpus.record(b, j).request_id
                }
                _ => String::new(),
            };
            Query {
                kind,
                org: corpus.orgs[org].id.clone(),
                category: rng.pick(CATEGORIES),
                user: corpus.user_email(org, &mut rng),
                since,
                until: (since + window).min(end),
                term,
            }
        })
        .collect()
}

/// Percent-encodes a query-string value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The collector's path and query for `q`.
pub fn collector_path(q: &Query) -> String {
    let base = format!("/api/v1/orgs/{}/audit-log", q.org);
    match q.kind {
        Kind::Filtered => format!(
            "{base}?category={}&user={}&since={}&until={}&limit={PAGE}",
            q.category,
            enc(&q.user),
            enc(&rfc3339(q.since)),
            enc(&rfc3339(q.until))
        ),
        Kind::TextCommon | Kind::TextNeedle => format!("{base}?q={}&limit={PAGE}", enc(&q.term)),
        Kind::Facets => format!(
            "{base}/facets?since={}&until={}",
            enc(&rfc3339(q.since)),
            enc(&rfc3339(q.until))
        ),
    }
}

/// Runs `queries` against the collector; returns the latencies and each query's `total`.
pub fn run_collector(c: &Collector, queries: &[Query]) -> Result<(Latencies, Vec<u64>)> {
    let client = http_client()?;
    let mut lat = Latencies::default();
    let mut totals = Vec::with_capacity(queries.len());
    for q in queries {
        let path = collector_path(q);
        let started = Instant::now();
        let r = client
            .get(c.url(&path))
            .bearer_auth(&c.keys(&q.org).reader)
            .send()
            .map_err(|e| BenchError::http(format!("GET {path}"), e))?;
        let status = r.status();
        let body = r
            .bytes()
            .map_err(|e| BenchError::http(format!("GET {path}"), e))?;
        lat.push(started.elapsed());
        if !status.is_success() {
            return Err(BenchError::http(
                format!("GET {path}"),
                format!("{status}: {}", String::from_utf8_lossy(&body)),
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| BenchError::http(format!("GET {path}"), e))?;
        totals.push(v["total"].as_u64().unwrap_or(0));
    }
    Ok((lat, totals))
}

/// How many days of `[since, until)` hold at least one of `org`'s records, by the collector's
/// facet histogram (what it stored, not what the bench meant to send).
pub fn days_with_records(c: &Collector, org: &str, since: i64, until: i64) -> Result<usize> {
    let path = format!(
        "/api/v1/orgs/{org}/audit-log/facets?since={}&until={}",
        enc(&rfc3339(since)),
        enc(&rfc3339(until))
    );
    let what = || format!("GET {path}");
    let r = http_client()?
        .get(c.url(&path))
        .bearer_auth(&c.keys(org).reader)
        .send()
        .map_err(|e| BenchError::http(what(), e))?;
    let status = r.status();
    let body = r.bytes().map_err(|e| BenchError::http(what(), e))?;
    if !status.is_success() {
        return Err(BenchError::http(
            what(),
            format!("{status}: {}", String::from_utf8_lossy(&body)),
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| BenchError::http(what(), e))?;
    let days: std::collections::HashSet<i64> = v["histogram"]["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["count"].as_u64().unwrap_or(0) > 0)
        .filter_map(|b| b["start"].as_str())
        .filter_map(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp_micros().div_euclid(DAY_MICROS))
        .collect();
    Ok(days.len())
}

fn ts(micros: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_default()
}

/// Runs `queries` against PostgreSQL: for searches the page and the count (the collector's
/// answer carries both), for facets one GROUPING SETS query. Returns latencies and totals.
pub fn run_postgres(pg: &Postgres, queries: &[Query]) -> Result<(Latencies, Vec<u64>)> {
    let mut client = pg.connect()?;
    let filtered_page = client
        .prepare(&format!(
            "SELECT {RECORD_COLUMNS} FROM audit_log WHERE org_id = $1 AND category = $2 AND actor_email = $3 AND time >= $4 AND time < $5 ORDER BY time DESC, id DESC LIMIT {PAGE}"
        ))
        .map_err(BenchError::sql("prepare"))?;
    let filtered_count = client
        .prepare("SELECT count(*) FROM audit_log WHERE org_id = $1 AND category = $2 AND actor_email = $3 AND time >= $4 AND time < $5")
        .map_err(BenchError::sql("prepare"))?;
    let text_page = client
        .prepare(&format!(
            "SELECT {RECORD_COLUMNS} FROM audit_log WHERE org_id = $1 AND tsv @@ to_tsquery('simple', $2) ORDER BY time DESC, id DESC LIMIT {PAGE}"
        ))
        .map_err(BenchError::sql("prepare"))?;
    let text_count = client
        .prepare(
            "SELECT count(*) FROM audit_log WHERE org_id = $1 AND tsv @@ to_tsquery('simple', $2)",
        )
        .map_err(BenchError::sql("prepare"))?;
    let facets = client
        .prepare(
            "SELECT category, action, coalesce(actor_email, actor_id) AS usr, repository, outcome, date_trunc('day', time) AS day, count(*)
             FROM audit_log WHERE org_id = $1 AND time >= $2 AND time < $3
             GROUP BY GROUPING SETS ((category), (action), (usr), (repository), (outcome), (day))",
        )
        .map_err(BenchError::sql("prepare"))?;
    let mut lat = Latencies::default();
    let mut totals = Vec::with_capacity(queries.len());
    for q in queries {
        let (since, until) = (ts(q.since), ts(q.until));
        let started = Instant::now();
        let total = match q.kind {
            Kind::Filtered => {
                let params: [&(dyn postgres::types::ToSql + Sync); 5] =
                    [&q.org, &q.category, &q.user, &since, &until];
                let rows = client
                    .query(&filtered_page, &params)
                    .map_err(BenchError::sql("filtered page"))?;
                let n: i64 = client
                    .query_one(&filtered_count, &params)
                    .map_err(BenchError::sql("filtered count"))?
                    .get(0);
                std::hint::black_box(rows);
                n as u64
            }
            Kind::TextCommon | Kind::TextNeedle => {
                let rows = client
                    .query(&text_page, &[&q.org, &q.term])
                    .map_err(BenchError::sql("text page"))?;
                let n: i64 = client
                    .query_one(&text_count, &[&q.org, &q.term])
                    .map_err(BenchError::sql("text count"))?
                    .get(0);
                std::hint::black_box(rows);
                n as u64
            }
            Kind::Facets => {
                let rows = client
                    .query(&facets, &[&q.org, &since, &until])
                    .map_err(BenchError::sql("facets"))?;
                // Top 10 per facet, as the collector answers; the outcome rows sum to the total.
                let mut total = 0;
                let mut per: HashMap<usize, Vec<(String, i64)>> = HashMap::new();
                for r in &rows {
                    let n: i64 = r.get(6);
                    for col in 0..5 {
                        if let Some(v) = r.get::<_, Option<String>>(col) {
                            per.entry(col).or_default().push((v, n));
                            if col == 4 {
                                total += n as u64;
                            }
                        }
                    }
                }
                for v in per.values_mut() {
                    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                    v.truncate(10);
                }
                std::hint::black_box(per);
                total
            }
        };
        lat.push(started.elapsed());
        totals.push(total);
    }
    Ok((lat, totals))
}

/// What a cursor walk measured.
#[derive(Debug, Clone, Default)]
pub struct Walk {
    pub records: u64,
    pub pages: u64,
    pub elapsed: Duration,
    pub page: Latencies,
}

impl Walk {
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

/// One page of a walk, as the bench reads it.
#[derive(serde::Deserialize)]
struct WalkPage<'a> {
    #[serde(borrow)]
    entries: Vec<&'a serde_json::value::RawValue>,
    next_cursor: Option<String>,
}

/// Walks every record of `org` newest first, [`WALK_PAGE`] per page, following `next_cursor`.
pub fn walk_collector(c: &Collector, org: &str) -> Result<Walk> {
    let client = http_client()?;
    let mut walk = Walk::default();
    let mut cursor: Option<String> = None;
    let started = Instant::now();
    loop {
        let mut path = format!("/api/v1/orgs/{org}/audit-log?limit={WALK_PAGE}");
        if let Some(cur) = &cursor {
            path.push_str("&cursor=");
            path.push_str(&enc(cur));
        }
        let t = Instant::now();
        let r = client
            .get(c.url(&path))
            .bearer_auth(&c.keys(org).reader)
            .send()
            .map_err(|e| BenchError::http("GET (walk)", e))?;
        let status = r.status();
        let body = r.bytes().map_err(|e| BenchError::http("GET (walk)", e))?;
        if !status.is_success() {
            return Err(BenchError::http(
                "GET (walk)",
                format!("{status}: {}", String::from_utf8_lossy(&body)),
            ));
        }
        walk.page.push(t.elapsed());
        // What a client following the cursor needs: the entries as they are (checked to be JSON,
        // not built into a tree: PostgreSQL's rows are not decoded either) and the cursor.
        let page: WalkPage =
            serde_json::from_slice(&body).map_err(|e| BenchError::http("GET (walk)", e))?;
        walk.pages += 1;
        walk.records += page.entries.len() as u64;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    walk.elapsed = started.elapsed();
    Ok(walk)
}

/// The same walk in PostgreSQL: keyset pagination on (time, id).
pub fn walk_postgres(pg: &Postgres, org: &str) -> Result<Walk> {
    let mut client = pg.connect()?;
    let first = client
        .prepare(&format!(
            "SELECT {RECORD_COLUMNS} FROM audit_log WHERE org_id = $1 ORDER BY time DESC, id DESC LIMIT {WALK_PAGE}"
        ))
        .map_err(BenchError::sql("prepare"))?;
    let next = client
        .prepare(&format!(
            "SELECT {RECORD_COLUMNS} FROM audit_log WHERE org_id = $1 AND (time, id) < ($2, $3) ORDER BY time DESC, id DESC LIMIT {WALK_PAGE}"
        ))
        .map_err(BenchError::sql("prepare"))?;
    let mut walk = Walk::default();
    let mut after: Option<(DateTime<Utc>, String)> = None;
    let started = Instant::now();
    loop {
        let t = Instant::now();
        let rows = match &after {
            None => client.query(&first, &[&org]),
            Some((time, id)) => client.query(&next, &[&org, time, id]),
        }
        .map_err(BenchError::sql("walk page"))?;
        walk.page.push(t.elapsed());
        walk.pages += 1;
        walk.records += rows.len() as u64;
        match rows.last() {
            Some(last) if rows.len() == WALK_PAGE => {
                after = Some((last.get("time"), last.get("id")));
            }
            _ => break,
        }
    }
    walk.elapsed = started.elapsed();
    Ok(walk)
}
