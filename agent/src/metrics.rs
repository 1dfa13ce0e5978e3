//! The agent's counters and gauges, exported on `/metrics` in the OpenMetrics text format.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Every metric the agent keeps. Cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    /// Complete lines read from files.
    pub lines_read: Counter,
    /// Records written to the spool, by source (`file`, `otlp`).
    pub records_spooled: Family<Labels, Counter>,
    /// Records sent to the collector (each attempt counts).
    pub records_forwarded: Counter,
    /// Records the collector accepted.
    pub records_acknowledged: Counter,
    /// Records the collector rejected as invalid (quarantined).
    pub records_rejected: Counter,
    /// Entries written to the quarantine file, by reason kind.
    pub quarantined: Family<Labels, Counter>,
    /// OTLP log records refused to the sender, by reason (`invalid`, `spool_full`,
    /// `spool_disk_full`, `spool_write_error`, `unavailable`).
    pub otlp_refused: Family<Labels, Counter>,
    /// Bytes in spool segments on disk.
    pub spool_bytes: Gauge<u64, AtomicU64>,
    /// Configured spool limit.
    pub spool_max_bytes: Gauge<u64, AtomicU64>,
    /// Bytes of each tailed file not yet spooled.
    pub file_lag_bytes: Family<Labels, Gauge<u64, AtomicU64>>,
    /// Files being tailed.
    pub files_open: Gauge<u64, AtomicU64>,
    /// Files gone (deleted, moved away, compressed) before they were read to their end.
    pub files_lost: Counter,
    /// Bytes of those files never read (from the checkpoint to the size last seen).
    pub file_bytes_lost: Counter,
    /// Times tailing paused because the spool was full.
    pub spool_full_pauses: Counter,
    /// Failed sends that will be retried.
    pub retries: Counter,
    /// Damaged spool tails cut off at start-up.
    pub spool_damaged: Counter,
    /// Failed writes to the data directory, by `file` (`spool`, `acked`, `checkpoints`,
    /// `quarantine`) and `kind` (`disk_full`, `io`); each is retried.
    pub disk_write_errors: Family<Labels, Counter>,
    /// Unix time (seconds) of the last error (forwarding, or writing the data directory), 0 if
    /// none.
    pub last_error_time: Gauge<u64, AtomicU64>,
    last_error: Mutex<Option<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("codestax_agent");
        let m = Metrics {
            lines_read: Counter::default(),
            records_spooled: Family::default(),
            records_forwarded: Counter::default(),
            records_acknowledged: Counter::default(),
            records_rejected: Counter::default(),
            quarantined: Family::default(),
            otlp_refused: Family::default(),
            spool_bytes: Gauge::default(),
            spool_max_bytes: Gauge::default(),
            file_lag_bytes: Family::default(),
            files_open: Gauge::default(),
            files_lost: Counter::default(),
            file_bytes_lost: Counter::default(),
            spool_full_pauses: Counter::default(),
            retries: Counter::default(),
            spool_damaged: Counter::default(),
            disk_write_errors: Family::default(),
            last_error_time: Gauge::default(),
            last_error: Mutex::new(None),
            registry: Registry::default(),
        };
        registry.register(
            "lines_read",
            "Complete lines read from files",
            m.lines_read.clone(),
        );
        registry.register(
            "records_spooled",
            "Records written to the spool, by source",
            m.records_spooled.clone(),
        );
        registry.register(
            "records_forwarded",
            "Records sent to the collector, every attempt counted",
            m.records_forwarded.clone(),
        );
        registry.register(
            "records_acknowledged",
            "Records the collector accepted",
            m.records_acknowledged.clone(),
        );
        registry.register(
            "records_rejected",
            "Records the collector rejected as invalid (quarantined)",
            m.records_rejected.clone(),
        );
        registry.register(
            "quarantined",
            "Entries written to the quarantine file, by reason",
            m.quarantined.clone(),
        );
        registry.register(
            "otlp_refused",
            "OTLP log records refused to the sender, by reason",
            m.otlp_refused.clone(),
        );
        registry.register(
            "spool_bytes",
            "Bytes in spool segments on disk",
            m.spool_bytes.clone(),
        );
        registry.register(
            "spool_max_bytes",
            "Configured spool limit in bytes",
            m.spool_max_bytes.clone(),
        );
        registry.register(
            "file_lag_bytes",
            "Bytes of a tailed file not yet in the spool",
            m.file_lag_bytes.clone(),
        );
        registry.register("files_open", "Files being tailed", m.files_open.clone());
        registry.register(
            "files_lost",
            "Files gone (deleted, moved away, compressed) before they were read to their end",
            m.files_lost.clone(),
        );
        registry.register(
            "file_bytes_lost",
            "Bytes of files gone before they were read: from the checkpoint to the size last seen",
            m.file_bytes_lost.clone(),
        );
        registry.register(
            "spool_full_pauses",
            "Times intake paused because the spool was full",
            m.spool_full_pauses.clone(),
        );
        registry.register(
            "retries",
            "Failed sends to the collector that will be retried",
            m.retries.clone(),
        );
        registry.register(
            "spool_damaged",
            "Damaged spool tails cut off at start-up",
            m.spool_damaged.clone(),
        );
        registry.register(
            "disk_write_errors",
            "Failed writes to the data directory (retried), by file and kind (disk_full, io)",
            m.disk_write_errors.clone(),
        );
        registry.register(
            "last_error_time_seconds",
            "Unix time of the last error (forwarding, or writing the data directory), 0 if none",
            m.last_error_time.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Adds to a counter family under one label.
    pub fn count(family: &Family<Labels, Counter>, key: &str, value: &str, n: u64) {
        family
            .get_or_create(&vec![(key.to_string(), value.to_string())])
            .inc_by(n);
    }

    /// Counts a failed write to the data directory (`file` is the label: `spool`, `acked`,
    /// `checkpoints`, `quarantine`) and remembers it as the last error.
    pub fn write_failed(&self, file: &'static str, disk_full: bool, error: impl Into<String>) {
        let kind = if disk_full { "disk_full" } else { "io" };
        self.disk_write_errors
            .get_or_create(&vec![
                ("file".to_string(), file.to_string()),
                ("kind".to_string(), kind.to_string()),
            ])
            .inc();
        self.set_last_error(error);
    }

    /// Sets the lag of a tailed file.
    pub fn set_file_lag(&self, path: &str, lag: u64) {
        self.file_lag_bytes
            .get_or_create(&vec![("path".to_string(), path.to_string())])
            .set(lag);
    }

    /// Drops the lag gauge of a released file.
    pub fn forget_file(&self, path: &str) {
        self.file_lag_bytes
            .remove(&vec![("path".to_string(), path.to_string())]);
    }

    /// Remembers the last error (shown on `/healthz` and as a timestamp on `/metrics`).
    pub fn set_last_error(&self, error: impl Into<String>) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_error_time.set(now);
        *self.last_error.lock().expect("last error lock") = Some(error.into());
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("last error lock").clone()
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
