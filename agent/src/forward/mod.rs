//! Forwarding spooled records to the collector over OTLP/gRPC: batching, gzip, bearer token,
//! TLS, retries forever with backoff, quarantine of rejected records, and acknowledgement of
//! the spool (and deletion of its segments) only once every record of a batch is settled.

mod backoff;
mod batch;
mod client;
mod response;

use std::collections::VecDeque;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::sync::watch;
use tonic::Code;

use codestax_common::otlp::to_log_record;

use crate::checkpoint::CheckpointStore;
use crate::metrics::Metrics;
use crate::quarantine::{Quarantine, QuarantineEntry, QuarantineKind};
use crate::spool::{Spool, SpoolPos};

pub use backoff::{BACKOFF_CAP, Backoff};
pub use batch::{Batch, BatchLimits, Batcher, Item};
pub use client::{Upstream, UpstreamError};
pub use response::{NOTHING_ACCEPTED, Rejections, parse as parse_rejections};

/// Sends what the spool holds to the collector, in order, one request at a time.
pub struct Forwarder {
    upstream: Upstream,
    batcher: Batcher,
    limits: BatchLimits,
    backoff: Backoff,
    spool: Spool,
    checkpoints: CheckpointStore,
    quarantine: Quarantine,
    metrics: Arc<Metrics>,
    /// A wait the collector asked for (gRPC `RetryInfo`), used once instead of a shorter one.
    retry_hint: Option<std::time::Duration>,
}

/// How a delivery attempt went for one group of records.
enum Outcome {
    /// Every record is accepted or quarantined.
    Settled,
    /// Send these (indices into the batch) again: the collector did not name every rejection,
    /// or the request must be split.
    Resend(Vec<Vec<usize>>),
    /// Try the same again later.
    Retry,
}

impl Forwarder {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        upstream: Upstream,
        limits: BatchLimits,
        backoff: Backoff,
        spool: Spool,
        checkpoints: CheckpointStore,
        quarantine: Quarantine,
        metrics: Arc<Metrics>,
    ) -> Forwarder {
        let batcher = Batcher::new(spool.reader(), checkpoints.clone(), metrics.clone());
        Forwarder {
            upstream,
            batcher,
            limits,
            backoff,
            spool,
            checkpoints,
            quarantine,
            metrics,
            retry_hint: None,
        }
    }

    /// Forwards until `stop` turns true. A request in flight is finished; a batch waiting for
    /// a retry is left in the spool (it is sent again after a restart, with the same ids).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let batch = tokio::select! {
                batch = self.batcher.next(self.limits) => batch,
                _ = stop.changed() => return,
            };
            if !self.deliver(batch, &mut stop).await {
                return;
            }
        }
    }

    /// Delivers one batch until every record is accepted or quarantined; false if stopped.
    async fn deliver(&mut self, mut batch: Batch, stop: &mut watch::Receiver<bool>) -> bool {
        if !batch.unreadable.is_empty() {
            self.write_quarantine(&batch.unreadable, stop).await;
        }
        let mut groups: VecDeque<Vec<usize>> = VecDeque::new();
        if !batch.items.is_empty() {
            groups.push_back((0..batch.items.len()).collect());
        }
        while let Some(group) = groups.pop_front() {
            loop {
                match self.attempt(&mut batch, &group, stop).await {
                    Outcome::Settled => break,
                    Outcome::Resend(parts) => {
                        for part in parts.into_iter().rev() {
                            groups.push_front(part);
                        }
                        break;
                    }
                    Outcome::Retry => {
                        let wait = self
                            .backoff
                            .next_wait()
                            .max(self.retry_hint.take().unwrap_or_default())
                            .min(BACKOFF_CAP);
                        self.metrics.retries.inc();
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = stop.changed() => return false,
                        }
                    }
                }
            }
        }
        if let Some(end) = batch.end {
            self.acknowledge(end).await;
        }
        true
    }

    async fn attempt(
        &mut self,
        batch: &mut Batch,
        group: &[usize],
        stop: &mut watch::Receiver<bool>,
    ) -> Outcome {
        // The LogRecords move into the request, uncopied; should the group have to go again,
        // they are built anew from the records.
        let request = request_of(batch, group);
        self.metrics.records_forwarded.inc_by(group.len() as u64);
        let outcome = match self.upstream.export(request).await {
            Ok(response) => {
                self.backoff.reset();
                self.on_accepted(batch, group, response, stop).await
            }
            Err(status) => self.on_status(batch, group, status, stop).await,
        };
        if !matches!(outcome, Outcome::Settled) {
            for &i in group {
                let item = &mut batch.items[i];
                item.log = to_log_record(&item.record);
            }
        }
        outcome
    }

    async fn on_accepted(
        &mut self,
        batch: &Batch,
        group: &[usize],
        response: ExportLogsServiceResponse,
        stop: &mut watch::Receiver<bool>,
    ) -> Outcome {
        let (rejected, message) = response
            .partial_success
            .map(|p| (p.rejected_log_records.max(0) as u64, p.error_message))
            .unwrap_or_default();
        if rejected == 0 {
            self.metrics.records_acknowledged.inc_by(group.len() as u64);
            return Outcome::Settled;
        }
        let found = response::parse(&message, rejected, group.len());
        self.metrics
            .records_acknowledged
            .inc_by((group.len() as u64).saturating_sub(rejected));
        self.reject(batch, group, &found, stop).await;
        if found.unnamed == 0 {
            return Outcome::Settled;
        }
        let rest: Vec<usize> = unnamed(group, &found);
        if found.named.is_empty() {
            // No progress possible: keep them all, saying what is known.
            let reason = format!(
                "the collector rejected {rejected} of {} records without naming them ({}); \
                 this record may or may not have been accepted",
                group.len(),
                first_line(&message)
            );
            self.quarantine_all(batch, &rest, &reason, stop).await;
            return Outcome::Settled;
        }
        // Accepted ones are sent again too: the collector drops them as duplicates by id, and
        // the unnamed rejections come back named.
        Outcome::Resend(vec![rest])
    }

    async fn on_status(
        &mut self,
        batch: &Batch,
        group: &[usize],
        status: tonic::Status,
        stop: &mut watch::Receiver<bool>,
    ) -> Outcome {
        let message = status.message().to_string();
        match status.code() {
            Code::InvalidArgument if message.starts_with(NOTHING_ACCEPTED) => {
                let found = response::parse(&message, group.len() as u64, group.len());
                self.reject(batch, group, &found, stop).await;
                if found.unnamed == 0 {
                    Outcome::Settled
                } else if found.named.is_empty() {
                    if group.len() == 1 {
                        self.quarantine_all(batch, group, &message, stop).await;
                        Outcome::Settled
                    } else {
                        Outcome::Resend(halves(group))
                    }
                } else {
                    Outcome::Resend(vec![unnamed(group, &found)])
                }
            }
            Code::InvalidArgument => {
                // Not about single records (e.g. the request as a whole): narrow it down.
                if group.len() == 1 {
                    self.quarantine_all(batch, group, &message, stop).await;
                    Outcome::Settled
                } else {
                    tracing::warn!(records = group.len(), error = %message, "request refused as invalid; splitting it");
                    Outcome::Resend(halves(group))
                }
            }
            code => {
                use tonic_types::StatusExt;
                self.retry_hint = status
                    .get_error_details()
                    .retry_info()
                    .and_then(|r| r.retry_delay);
                let text = format!("collector answered {code:?}: {message}");
                if matches!(code, Code::Unauthenticated | Code::PermissionDenied) {
                    tracing::error!(
                        error = %text,
                        "the collector refuses this agent's token; check collector.token. Records are kept and retried"
                    );
                } else if self.backoff.failures() == 0 || self.backoff.failures().is_multiple_of(10)
                {
                    tracing::warn!(error = %text, failures = self.backoff.failures(), "send failed; retrying");
                }
                self.metrics.set_last_error(text);
                Outcome::Retry
            }
        }
    }

    /// Quarantines the named rejections with the collector's reasons.
    async fn reject(
        &mut self,
        batch: &Batch,
        group: &[usize],
        found: &Rejections,
        stop: &mut watch::Receiver<bool>,
    ) {
        let entries: Vec<QuarantineEntry> = found
            .named
            .iter()
            .map(|(&i, reason)| rejected_entry(batch, group[i], reason))
            .collect();
        self.metrics.records_rejected.inc_by(entries.len() as u64);
        self.write_quarantine(&entries, stop).await;
    }

    async fn quarantine_all(
        &mut self,
        batch: &Batch,
        indices: &[usize],
        reason: &str,
        stop: &mut watch::Receiver<bool>,
    ) {
        let entries: Vec<QuarantineEntry> = indices
            .iter()
            .map(|&i| rejected_entry(batch, i, reason))
            .collect();
        self.metrics.records_rejected.inc_by(entries.len() as u64);
        self.write_quarantine(&entries, stop).await;
    }

    /// Writes quarantine entries, retrying until they are durable (they must be before the
    /// spool is acknowledged past them).
    async fn write_quarantine(
        &mut self,
        entries: &[QuarantineEntry],
        stop: &mut watch::Receiver<bool>,
    ) {
        let mut backoff = self.backoff.clone();
        backoff.reset();
        loop {
            let quarantine = self.quarantine.clone();
            let owned = entries.to_vec();
            let result = tokio::task::spawn_blocking(move || quarantine.write(&owned))
                .await
                .expect("quarantine write does not panic");
            match result {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(error = %e, "cannot write the quarantine; retrying");
                    self.metrics.set_last_error(e.to_string());
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        }
    }

    /// Acknowledges the spool up to `end`; then persists the checkpoints and deletes the
    /// segments that are entirely acknowledged.
    async fn acknowledge(&mut self, end: SpoolPos) {
        let spool = self.spool.clone();
        let checkpoints = self.checkpoints.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<(), String> {
            spool.ack(end).map_err(|e| e.to_string())?;
            if spool.has_deletable() {
                checkpoints.persist().map_err(|e| e.to_string())?;
                spool.delete_acked().map_err(|e| e.to_string())?;
            }
            Ok(())
        })
        .await
        .expect("acknowledgement does not panic");
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot acknowledge the spool");
            self.metrics.set_last_error(e);
        }
        self.metrics.spool_bytes.set(self.spool.stats().used_bytes);
    }
}

fn rejected_entry(batch: &Batch, index: usize, reason: &str) -> QuarantineEntry {
    let item = &batch.items[index];
    let json = serde_json::to_vec(&item.record).expect("a record serialises");
    QuarantineEntry {
        kind: QuarantineKind::Rejected,
        source: "collector",
        path: None,
        offset: None,
        reason: reason.to_string(),
        line_bytes: json.len() as u64,
        line: json,
    }
}

fn unnamed(group: &[usize], found: &Rejections) -> Vec<usize> {
    group
        .iter()
        .enumerate()
        .filter(|(i, _)| !found.named.contains_key(i))
        .map(|(_, &index)| index)
        .collect()
}

fn halves(group: &[usize]) -> Vec<Vec<usize>> {
    let (a, b) = group.split_at(group.len() / 2);
    vec![a.to_vec(), b.to_vec()]
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or("")
}

/// One request: all records in one ResourceLogs / ScopeLogs, in the attributes style. The
/// group's LogRecords are taken out of the batch.
fn request_of(batch: &mut Batch, group: &[usize]) -> ExportLogsServiceRequest {
    let text = |s: &str| {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(s.to_string())),
        })
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: text("codestax-agent"),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "codestax-agent".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                log_records: group
                    .iter()
                    .map(|&i| std::mem::take(&mut batch.items[i].log))
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
