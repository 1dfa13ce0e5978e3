//! The collector's Prometheus metrics: what was accepted, rejected and deduplicated (by receiver
//! and reason), WAL fsyncs, index commits, search latency, index size, and retention (records
//! deleted, age of the oldest record kept, the janitor's last run) and records refused by the
//! ingest rate limits; failed writes of the WAL and the index, the index's recoveries, and whether
//! each takes writes now. Series name orgs only when the operator opts in (`metrics.per_org`): the
//! listener has no authentication, and an org's existence must not leak.

use crate::retention::JanitorReport;
use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverLabel {
    receiver: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabel {
    receiver: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
}

/// `org="..."` with per-org series on, no label with them off (figures summed over orgs).
type OrgLabels = Vec<(&'static str, String)>;

/// `scope="key|org"`, plus `org` with per-org series on.
type RateLimitLabels = Vec<(&'static str, String)>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabel {
    shard: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartLabel {
    part: String,
}

/// Every metric the collector exports, registered once.
pub struct Metrics {
    registry: Registry,
    accepted: Family<ReceiverLabel, Counter>,
    deduplicated: Family<ReceiverLabel, Counter>,
    rejected: Family<RejectLabel, Counter>,
    search_seconds: Family<EndpointLabel, Histogram>,
    commit_seconds: Histogram,
    index_lag_seconds: Histogram,
    index_held_back_seconds: Histogram,
    wal_fsyncs: Gauge<u64, AtomicU64>,
    wal_fsync_seconds_sum: Gauge<f64, AtomicU64>,
    index_documents: Gauge<u64, AtomicU64>,
    index_bytes: Gauge<u64, AtomicU64>,
    retention_deleted: Family<OrgLabels, Counter>,
    retention_oldest_age: Family<OrgLabels, Gauge<f64, AtomicU64>>,
    rate_limited: Family<RateLimitLabels, Counter>,
    /// Whether series may carry org ids (`metrics.per_org`).
    per_org: bool,
    retention_partitions_dropped: Counter,
    janitor_runs: Family<ResultLabel, Counter>,
    janitor_last_run: Gauge<f64, AtomicU64>,
    janitor_last_duration: Gauge<f64, AtomicU64>,
    wal_write_failures: Gauge<u64, AtomicU64>,
    tree_write_failures: Gauge<u64, AtomicU64>,
    index_write_failures: Counter,
    index_recoveries: Counter,
    writable: Family<PartLabel, Gauge<u64, AtomicU64>>,
    /// The oldest record kept per org, as of the janitor's last run: ages are taken at scrape.
    oldest: Mutex<BTreeMap<String, DateTime<Utc>>>,
    /// Streams, set at scrape ([`Metrics::observe_streams`]).
    streams_by_state: Family<Vec<(&'static str, String)>, Gauge<u64, AtomicU64>>,
    stream_delivered_seq: Family<OrgLabels, Gauge<u64, AtomicU64>>,
    stream_lag_records: Family<OrgLabels, Gauge<u64, AtomicU64>>,
    stream_lag_seconds: Family<OrgLabels, Gauge<f64, AtomicU64>>,
    stream_delivered: Family<OrgLabels, Gauge<u64, AtomicU64>>,
    stream_expired: Family<OrgLabels, Gauge<u64, AtomicU64>>,
    stream_truncated: Family<OrgLabels, Gauge<u64, AtomicU64>>,
    /// Cluster owners: when each held shard's snapshot was last published (ages at scrape).
    snapshot_published: Mutex<BTreeMap<u32, DateTime<Utc>>>,
    snapshot_age: Family<ShardLabel, Gauge<f64, AtomicU64>>,
    restore_seconds: Histogram,
}

/// One stream's figures for the metrics.
#[derive(Debug, Clone)]
pub struct StreamSample {
    pub org: String,
    pub stream: String,
    pub state: &'static str,
    pub delivered_seq: u64,
    pub lag_records: u64,
    pub lag_seconds: f64,
    pub delivered_records: u64,
    pub expired_records: u64,
    pub truncated_records: u64,
}

/// Figures sampled at scrape time from the store and the index.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sampled {
    pub wal_fsyncs: u64,
    pub wal_fsync_seconds: f64,
    /// Groups the WAL could not write since start.
    pub wal_write_failures: u64,
    /// Writes or syncs of the Merkle trees that failed since start.
    pub tree_write_failures: u64,
    pub index_documents: u64,
    pub index_bytes: u64,
    /// Whether the WAL and the index take writes now (the collector's health).
    pub wal_writable: bool,
    pub index_writable: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Metrics without org ids in any series.
    pub fn new() -> Self {
        Self::with_per_org(false)
    }

    /// Metrics whose per-org series carry `org="..."` when `per_org` is set.
    pub fn with_per_org(per_org: bool) -> Self {
        let mut registry = Registry::with_prefix("codestax_collector");
        let accepted = Family::<ReceiverLabel, Counter>::default();
        registry.register(
            "records_accepted",
            "Records stored durably (not counting duplicates)",
            accepted.clone(),
        );
        let deduplicated = Family::<ReceiverLabel, Counter>::default();
        registry.register(
            "records_deduplicated",
            "Records acknowledged again because their (org, id) was already stored",
            deduplicated.clone(),
        );
        let rejected = Family::<RejectLabel, Counter>::default();
        registry.register(
            "records_rejected",
            "Records rejected, by receiver and the first field at fault",
            rejected.clone(),
        );
        let search_seconds = Family::<EndpointLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        registry.register(
            "search_seconds",
            "Latency of search, facets, get and export queries",
            search_seconds.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "index_commit_seconds",
            "Latency of index commits (commit and reader reload)",
            commit_seconds.clone(),
        );
        let index_lag_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "index_lag_seconds",
            "Per commit, how long the oldest record it made searchable had been acknowledged",
            index_lag_seconds.clone(),
        );
        let index_held_back_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "index_held_back_seconds",
            "Each wait, while past weeks' records filled the cold stage, for the flight in the air \
             to land: the indexer took no batch meanwhile (acks wait once its queue is full)",
            index_held_back_seconds.clone(),
        );
        let wal_fsyncs = Gauge::<u64, AtomicU64>::default();
        registry.register("wal_fsyncs", "WAL fsyncs since start", wal_fsyncs.clone());
        let wal_fsync_seconds_sum = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "wal_fsync_seconds_sum",
            "Total time spent in WAL fsyncs since start",
            wal_fsync_seconds_sum.clone(),
        );
        let index_documents = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "index_documents",
            "Records in the index",
            index_documents.clone(),
        );
        let index_bytes = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "index_bytes",
            "Bytes of the index on disk",
            index_bytes.clone(),
        );
        let retention_deleted = Family::<OrgLabels, Counter>::default();
        registry.register(
            "retention_records_deleted",
            "Records deleted by the retention janitor (by org with metrics.per_org)",
            retention_deleted.clone(),
        );
        let retention_oldest_age = Family::<OrgLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "retention_oldest_record_age_seconds",
            "Age of the oldest record kept, as found by the janitor's last run (by org with \
             metrics.per_org; otherwise the oldest of all orgs)",
            retention_oldest_age.clone(),
        );
        let rate_limited = Family::<RateLimitLabels, Counter>::default();
        registry.register(
            "ingest_records_rate_limited",
            "Records refused by an ingest rate limit, by scope (key or org; and by org with \
             metrics.per_org)",
            rate_limited.clone(),
        );
        let retention_partitions_dropped = Counter::default();
        registry.register(
            "retention_partitions_dropped",
            "Index partitions deleted whole by the retention janitor",
            retention_partitions_dropped.clone(),
        );
        let janitor_runs = Family::<ResultLabel, Counter>::default();
        registry.register(
            "retention_janitor_runs",
            "Runs of the retention janitor, by result (ok or error)",
            janitor_runs.clone(),
        );
        let janitor_last_run = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "retention_janitor_last_run_timestamp_seconds",
            "When the retention janitor last finished a run (Unix time; 0 = not yet)",
            janitor_last_run.clone(),
        );
        let janitor_last_duration = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "retention_janitor_last_run_duration_seconds",
            "How long the retention janitor's last run took",
            janitor_last_duration.clone(),
        );
        let wal_write_failures = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "wal_write_failures",
            "Groups of records the WAL could not write (full disk, I/O error) since start; none of \
             their records was acknowledged",
            wal_write_failures.clone(),
        );
        let tree_write_failures = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "tree_write_failures",
            "Writes or syncs of the per-org Merkle trees that failed since start; the WAL keeps \
             their records until the trees have them",
            tree_write_failures.clone(),
        );
        let index_write_failures = Counter::default();
        registry.register(
            "index_write_failures",
            "Failed index writes: adds, commits and recovery attempts (ingest is refused while \
             the index fails; acknowledged records wait in the WAL)",
            index_write_failures.clone(),
        );
        let index_recoveries = Counter::default();
        registry.register(
            "index_recoveries",
            "Times the index wrote again after failing, without a restart",
            index_recoveries.clone(),
        );
        let writable = Family::<PartLabel, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "writable",
            "Whether the part (wal, index) takes writes now: 1 yes, 0 no (/readyz answers 503)",
            writable.clone(),
        );
        let streams_by_state =
            Family::<Vec<(&'static str, String)>, Gauge<u64, AtomicU64>>::default();
        registry.register("streams", "Streams by state", streams_by_state.clone());
        let stream_delivered_seq = Family::<OrgLabels, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "stream_delivered_seq",
            "The org seq each stream delivered through (with metrics.per_org only)",
            stream_delivered_seq.clone(),
        );
        let stream_lag_records = Family::<OrgLabels, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "stream_lag_records",
            "Records stored but not yet delivered (per stream with metrics.per_org; otherwise the largest)",
            stream_lag_records.clone(),
        );
        let stream_lag_seconds = Family::<OrgLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "stream_lag_seconds",
            "Age of the oldest record not yet delivered (per stream with metrics.per_org; otherwise the largest)",
            stream_lag_seconds.clone(),
        );
        let stream_delivered = Family::<OrgLabels, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "stream_records_delivered",
            "Records destinations accepted since start (per stream with metrics.per_org; otherwise summed)",
            stream_delivered.clone(),
        );
        let stream_expired = Family::<OrgLabels, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "stream_records_expired",
            "Records retention deleted before their stream delivered them",
            stream_expired.clone(),
        );
        let stream_truncated = Family::<OrgLabels, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "stream_records_truncated",
            "Records too long for their destination, sent as a reference stub",
            stream_truncated.clone(),
        );
        let snapshot_age = Family::<ShardLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "cluster_snapshot_age_seconds",
            "Per shard this node owns, how far its latest snapshot may be behind: seconds since it \
             was published, restored, or last found to hold everything consumed",
            snapshot_age.clone(),
        );
        let restore_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        registry.register(
            "cluster_restore_seconds",
            "How long restoring a shard's snapshot from the object store took, on taking the shard",
            restore_seconds.clone(),
        );
        Metrics {
            registry,
            accepted,
            deduplicated,
            rejected,
            search_seconds,
            commit_seconds,
            index_lag_seconds,
            index_held_back_seconds,
            wal_fsyncs,
            wal_fsync_seconds_sum,
            index_documents,
            index_bytes,
            retention_deleted,
            retention_oldest_age,
            rate_limited,
            per_org,
            retention_partitions_dropped,
            janitor_runs,
            janitor_last_run,
            janitor_last_duration,
            wal_write_failures,
            tree_write_failures,
            index_write_failures,
            index_recoveries,
            writable,
            oldest: Mutex::new(BTreeMap::new()),
            streams_by_state,
            stream_delivered_seq,
            stream_lag_records,
            stream_lag_seconds,
            stream_delivered,
            stream_expired,
            stream_truncated,
            snapshot_published: Mutex::new(BTreeMap::new()),
            snapshot_age,
            restore_seconds,
        }
    }

    /// `shard`'s latest snapshot holds everything its owner consumed as of now (published,
    /// restored, or found current).
    pub fn observe_snapshot_published(&self, shard: u32) {
        self.published().insert(shard, Utc::now());
    }

    /// An owner restored `shard`'s snapshot in `seconds`.
    pub fn observe_restore(&self, shard: u32, seconds: f64) {
        self.restore_seconds.observe(seconds);
        self.observe_snapshot_published(shard);
    }

    /// This node no longer owns `shard`: its snapshot age is another node's to report.
    pub fn forget_shard(&self, shard: u32) {
        self.published().remove(&shard);
    }

    fn published(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, DateTime<Utc>>> {
        self.snapshot_published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the stream series from `samples` (at scrape). Without per-org series: streams by
    /// state, the largest lag, and totals, naming no org or stream; with them, per `org` and
    /// `stream`, plus each stream's delivered `seq`.
    pub fn observe_streams(&self, samples: &[StreamSample]) {
        self.streams_by_state.clear();
        self.stream_delivered_seq.clear();
        self.stream_lag_records.clear();
        self.stream_lag_seconds.clear();
        self.stream_delivered.clear();
        self.stream_expired.clear();
        self.stream_truncated.clear();
        for state in ["healthy", "retrying", "paused", "failed"] {
            self.streams_by_state
                .get_or_create(&vec![("state", state.to_string())])
                .set(0);
        }
        for s in samples {
            self.streams_by_state
                .get_or_create(&vec![("state", s.state.to_string())])
                .inc();
            let labels = if self.per_org {
                vec![("org", s.org.clone()), ("stream", s.stream.clone())]
            } else {
                Vec::new()
            };
            if self.per_org {
                self.stream_delivered_seq
                    .get_or_create(&labels)
                    .set(s.delivered_seq);
            }
            let lag = self.stream_lag_records.get_or_create(&labels);
            lag.set(lag.get().max(s.lag_records));
            let secs = self.stream_lag_seconds.get_or_create(&labels);
            secs.set(secs.get().max(s.lag_seconds));
            self.stream_delivered
                .get_or_create(&labels)
                .inc_by(s.delivered_records);
            self.stream_expired
                .get_or_create(&labels)
                .inc_by(s.expired_records);
            self.stream_truncated
                .get_or_create(&labels)
                .inc_by(s.truncated_records);
        }
    }

    pub fn record_accepted(&self, receiver: &str, stored: u64, duplicates: u64) {
        let label = ReceiverLabel {
            receiver: receiver.to_string(),
        };
        self.accepted.get_or_create(&label).inc_by(stored);
        self.deduplicated.get_or_create(&label).inc_by(duplicates);
    }

    pub fn record_rejected(&self, receiver: &str, reason: &str, count: u64) {
        self.rejected
            .get_or_create(&RejectLabel {
                receiver: receiver.to_string(),
                reason: reason.to_string(),
            })
            .inc_by(count);
    }

    /// `records` of a batch for `org` refused by the rate limit of `scope` (`key` or `org`).
    pub fn record_rate_limited(&self, scope: &str, org: &str, records: u64) {
        let mut labels = vec![("scope", scope.to_string())];
        labels.extend(self.org_labels(org));
        self.rate_limited.get_or_create(&labels).inc_by(records);
    }

    /// The org label of a per-org series: none unless per-org series are on.
    fn org_labels(&self, org: &str) -> OrgLabels {
        if self.per_org {
            vec![("org", org.to_string())]
        } else {
            Vec::new()
        }
    }

    pub fn observe_search(&self, endpoint: &str, seconds: f64) {
        self.search_seconds
            .get_or_create(&EndpointLabel {
                endpoint: endpoint.to_string(),
            })
            .observe(seconds);
    }

    pub fn observe_commit(&self, seconds: f64) {
        self.commit_seconds.observe(seconds);
    }

    /// A commit made searchable records acknowledged `seconds` ago at the oldest.
    pub fn observe_index_lag(&self, seconds: f64) {
        self.index_lag_seconds.observe(seconds);
    }

    /// The indexer took no batch for `seconds`: the cold stage was full until a flight landed.
    pub fn observe_index_held_back(&self, seconds: f64) {
        self.index_held_back_seconds.observe(seconds);
    }

    /// A janitor run that finished at `finished`.
    pub fn observe_janitor(&self, report: &JanitorReport, finished: DateTime<Utc>) {
        for (org, n) in &report.deleted {
            self.retention_deleted
                .get_or_create(&self.org_labels(org))
                .inc_by(*n);
        }
        self.retention_partitions_dropped
            .inc_by(report.partitions_dropped.len() as u64);
        self.janitor_runs
            .get_or_create(&ResultLabel {
                result: "ok".into(),
            })
            .inc();
        self.janitor_last_run
            .set(finished.timestamp_micros() as f64 / 1e6);
        self.janitor_last_duration
            .set(report.duration.as_secs_f64());
        *self.oldest.lock().unwrap_or_else(|e| e.into_inner()) = report.oldest.clone();
    }

    /// A janitor run that failed.
    pub fn observe_janitor_failure(&self) {
        self.janitor_runs
            .get_or_create(&ResultLabel {
                result: "error".into(),
            })
            .inc();
    }

    /// An index write (add, commit or recovery attempt) failed.
    pub fn observe_index_failure(&self) {
        self.index_write_failures.inc();
    }

    /// The index writes again after failing.
    pub fn observe_index_recovery(&self) {
        self.index_recoveries.inc();
    }

    /// The Prometheus text exposition, with the sampled figures filled in.
    pub fn render(&self, sampled: Sampled) -> String {
        let now = Utc::now();
        self.retention_oldest_age.clear();
        for (org, oldest) in self.oldest.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let age = (now - *oldest).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
            // Without per-org series, one gauge keeps the oldest of all orgs.
            let gauge = self
                .retention_oldest_age
                .get_or_create(&self.org_labels(org));
            gauge.set(gauge.get().max(age.max(0.0)));
        }
        self.snapshot_age.clear();
        for (shard, at) in self.published().iter() {
            let age = (now - *at).num_milliseconds().max(0) as f64 / 1e3;
            self.snapshot_age
                .get_or_create(&ShardLabel { shard: *shard })
                .set(age);
        }
        self.wal_fsyncs.set(sampled.wal_fsyncs);
        self.wal_fsync_seconds_sum.set(sampled.wal_fsync_seconds);
        self.index_documents.set(sampled.index_documents);
        self.index_bytes.set(sampled.index_bytes);
        self.wal_write_failures.set(sampled.wal_write_failures);
        self.tree_write_failures.set(sampled.tree_write_failures);
        for (part, writable) in [
            ("wal", sampled.wal_writable),
            ("index", sampled.index_writable),
        ] {
            self.writable
                .get_or_create(&PartLabel { part: part.into() })
                .set(u64::from(writable));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> JanitorReport {
        let now = Utc::now();
        JanitorReport {
            deleted: [("org-a".to_string(), 2), ("org-b".to_string(), 3)].into(),
            oldest: [
                ("org-a".to_string(), now - chrono::Duration::days(2)),
                ("org-b".to_string(), now - chrono::Duration::days(9)),
            ]
            .into(),
            ..JanitorReport::default()
        }
    }

    fn sample(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    #[test]
    fn snapshot_ages_are_per_owned_shard_and_restores_are_timed() {
        let m = Metrics::new();
        m.observe_snapshot_published(3);
        m.observe_restore(5, 0.4);
        let text = m.render(Sampled::default());
        let age = "codestax_collector_cluster_snapshot_age_seconds{shard=\"3\"}";
        assert!(sample(&text, age) < 5.0, "{text}");
        assert_eq!(
            sample(&text, "codestax_collector_cluster_restore_seconds_count"),
            1.0
        );
        assert_eq!(
            sample(&text, "codestax_collector_cluster_restore_seconds_sum"),
            0.4
        );
        // A shard given up is another node's to report.
        m.forget_shard(3);
        let text = m.render(Sampled::default());
        assert!(!text.contains(age), "{text}");
        assert!(text.contains("shard=\"5\""), "{text}");
    }

    #[test]
    fn without_per_org_series_no_org_is_named_and_figures_cover_all_orgs() {
        let m = Metrics::new();
        m.observe_janitor(&report(), Utc::now());
        m.record_rate_limited("key", "org-a", 7);
        m.record_rate_limited("org", "org-b", 4);
        let text = m.render(Sampled::default());
        assert!(!text.contains("org-"), "{text}");
        let deleted = "codestax_collector_retention_records_deleted_total";
        assert_eq!(sample(&text, deleted), 5.0);
        let age = sample(
            &text,
            "codestax_collector_retention_oldest_record_age_seconds",
        );
        assert!(
            (9.0 * 86400.0..9.0 * 86400.0 + 60.0).contains(&age),
            "{age}"
        );
        let limited = "codestax_collector_ingest_records_rate_limited_total";
        assert_eq!(sample(&text, &format!("{limited}{{scope=\"key\"}}")), 7.0);
        assert_eq!(sample(&text, &format!("{limited}{{scope=\"org\"}}")), 4.0);
    }

    #[test]
    fn per_org_series_name_each_org() {
        let m = Metrics::with_per_org(true);
        m.observe_janitor(&report(), Utc::now());
        m.record_rate_limited("key", "org-a", 7);
        let text = m.render(Sampled::default());
        let deleted = "codestax_collector_retention_records_deleted_total";
        assert_eq!(sample(&text, &format!("{deleted}{{org=\"org-a\"}}")), 2.0);
        assert_eq!(sample(&text, &format!("{deleted}{{org=\"org-b\"}}")), 3.0);
        let limited = "codestax_collector_ingest_records_rate_limited_total";
        assert_eq!(
            sample(&text, &format!("{limited}{{scope=\"key\",org=\"org-a\"}}")),
            7.0
        );
    }
}
