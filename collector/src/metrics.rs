//! The collector's Prometheus metrics: what was accepted, rejected and deduplicated (by receiver
//! and reason), WAL fsyncs, index commits, search latency, and index size.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
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

/// Every metric the collector exports, registered once.
pub struct Metrics {
    registry: Registry,
    accepted: Family<ReceiverLabel, Counter>,
    deduplicated: Family<ReceiverLabel, Counter>,
    rejected: Family<RejectLabel, Counter>,
    search_seconds: Family<EndpointLabel, Histogram>,
    commit_seconds: Histogram,
    wal_fsyncs: Gauge<u64, AtomicU64>,
    wal_fsync_seconds_sum: Gauge<f64, AtomicU64>,
    index_documents: Gauge<u64, AtomicU64>,
    index_bytes: Gauge<u64, AtomicU64>,
}

/// Figures sampled at scrape time from the store and the index.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sampled {
    pub wal_fsyncs: u64,
    pub wal_fsync_seconds: f64,
    pub index_documents: u64,
    pub index_bytes: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
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
        Metrics {
            registry,
            accepted,
            deduplicated,
            rejected,
            search_seconds,
            commit_seconds,
            wal_fsyncs,
            wal_fsync_seconds_sum,
            index_documents,
            index_bytes,
        }
    }

    pub fn record_accepted(&self, receiver: &str, stored: u64, duplicates: u64) {
        let label = ReceiverLabel {
            receiver: receiver.to_string(),
        };
        self.accepted.get_or_create(&label).inc_by(stored);
        self.deduplicated.get_or_create(&label).inc_by(duplicates);
    }

    pub fn record_rejected(&self, receiver: &str, reason: &str) {
        self.rejected
            .get_or_create(&RejectLabel {
                receiver: receiver.to_string(),
                reason: reason.to_string(),
            })
            .inc();
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

    /// The Prometheus text exposition, with the sampled figures filled in.
    pub fn render(&self, sampled: Sampled) -> String {
        self.wal_fsyncs.set(sampled.wal_fsyncs);
        self.wal_fsync_seconds_sum.set(sampled.wal_fsync_seconds);
        self.index_documents.set(sampled.index_documents);
        self.index_bytes.set(sampled.index_bytes);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
