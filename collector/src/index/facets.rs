//! [`AuditIndex::facets`]: the most frequent values of the facet columns and a time histogram,
//! counted over fast columns from the snapshot a new search sees.

use super::audit_index::AuditIndex;
use super::collect::{DocFilter, FacetCollector, FacetFruit, HOUR_MICROS};
use super::error::IndexError;
use super::query::{Plan, SearchQuery};
use super::scheme::micros_to_time;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// A facet query over a range this long or shorter gets hour buckets, else day buckets.
const HOURLY_MAX_RANGE_MICROS: i64 = 3 * 24 * HOUR_MICROS;
const DAY_MICROS: i64 = 24 * HOUR_MICROS;

/// What [`AuditIndex::facets`] counts. The API sends it as `codestax_common::api::FacetResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facets {
    /// Matches in the snapshot.
    pub total: u64,
    pub categories: Vec<ValueCount>,
    pub actions: Vec<ValueCount>,
    /// Actor email, else id.
    pub users: Vec<ValueCount>,
    pub repositories: Vec<ValueCount>,
    pub outcomes: Vec<ValueCount>,
    pub histogram: Histogram,
}

/// How many matches hold a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueCount {
    pub value: String,
    pub count: u64,
}

/// Matches per UTC hour or day, from the first non-empty bucket to the last, empty ones included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    pub interval: Interval,
    pub buckets: Vec<Bucket>,
}

/// The width of a [`Histogram`]'s buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Hour,
    Day,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Start of the bucket (inclusive).
    pub start: DateTime<Utc>,
    pub count: u64,
}

impl AuditIndex {
    /// `top_n` most frequent values of category, action, user (actor email, else id),
    /// repository and outcome (count desc, then value), and a histogram over time in UTC hour
    /// buckets when the range is at most 3 days, else day buckets. The range is `[since, until)`; an open end is closed by the earliest
    /// or latest match. Buckets run from the first to the last non-empty one, empty ones included.
    pub fn facets(&self, org: &str, q: &SearchQuery, top_n: usize) -> Result<Facets, IndexError> {
        let started = Instant::now();
        let plan = Plan::new(&self.shared.fields, org, q)?;
        // The same snapshot as a first search page: a partition is reloaded (its records visible)
        // a moment before the snapshot mark moves past them, and counts must never run ahead of
        // what a search returns.
        let collector = FacetCollector {
            filter: DocFilter {
                since: plan.since,
                until: plan.until,
                lsn_below: Some(self.snapshot_bound()),
            },
            cache: Some((self.shared.facet_cache.clone(), plan.filter_key.clone())),
        };
        let (hits, misses) = self.shared.facet_cache.counters();
        let mut all = FacetFruit::default();
        for p in self.shared.partitions_newest_first(plan.since, plan.until) {
            let Some(searcher) = self.shared.searcher(&p)? else {
                continue;
            };
            all.merge(
                &searcher
                    .search(plan.query.as_ref(), &collector)
                    .map_err(|e| IndexError::tantivy(&p.dir, "compute facets", e))?,
            );
        }
        let [categories, actions, users, repositories, outcomes] =
            std::mem::take(&mut all.values).map(|values| top(values, top_n));
        // The client's own range picks the buckets' width; the retention floor only filters.
        let histogram = histogram(&all, q.since.map(|t| t.timestamp_micros()), plan.until);
        let (hits_after, misses_after) = self.shared.facet_cache.counters();
        tracing::debug!(
            org,
            total = all.count,
            cached_segments = hits_after - hits,
            counted_segments = misses_after - misses,
            elapsed_us = started.elapsed().as_micros() as u64,
            "facets"
        );
        Ok(Facets {
            total: all.count,
            categories,
            actions,
            users,
            repositories,
            outcomes,
            histogram,
        })
    }
}

/// The `n` most frequent values: count desc, then value asc.
fn top(values: HashMap<String, u64>, n: usize) -> Vec<ValueCount> {
    let mut v: Vec<ValueCount> = values
        .into_iter()
        .map(|(value, count)| ValueCount { value, count })
        .collect();
    v.sort_unstable_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
    v.truncate(n);
    v
}

fn histogram(all: &FacetFruit, since: Option<i64>, until: Option<i64>) -> Histogram {
    let start = since.or(all.min_time);
    let end = until.or(all.max_time.map(|t| t.saturating_add(1)));
    let interval = match (start, end) {
        (Some(s), Some(e)) if e.saturating_sub(s) <= HOURLY_MAX_RANGE_MICROS => Interval::Hour,
        _ => Interval::Day,
    };
    let width = match interval {
        Interval::Hour => HOUR_MICROS,
        Interval::Day => DAY_MICROS,
    };
    let mut counts: BTreeMap<i64, u64> = BTreeMap::new();
    for (&hour, &c) in &all.hours {
        *counts.entry(hour.div_euclid(width) * width).or_default() += c;
    }
    let mut buckets = Vec::new();
    if let (Some(&first), Some(&last)) = (counts.keys().next(), counts.keys().next_back()) {
        let mut b = first;
        while b <= last {
            buckets.push(Bucket {
                start: micros_to_time(b),
                count: counts.get(&b).copied().unwrap_or(0),
            });
            b += width;
        }
    }
    Histogram { interval, buckets }
}
