//! Forwarding spooled records to the collector over OTLP/gRPC: batching, gzip, bearer token,
//! TLS, retries forever with backoff, quarantine of rejected records, and acknowledgement of
//! the spool (and deletion of its segments) only once every record of a batch is settled.

mod backoff;
mod batch;
mod client;
pub mod request;
mod response;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::Code;

use crate::checkpoint::CheckpointStore;
use crate::metrics::Metrics;
use crate::quarantine::{Quarantine, QuarantineEntry, QuarantineKind};
use crate::spool::{Spool, SpoolError, SpoolPos};

pub use backoff::{BACKOFF_CAP, Backoff};
pub use batch::{Batch, BatchLimits, Batcher};
pub use client::{Compression, FRAME_HEADER, Upstream, UpstreamError};
pub use response::{NOTHING_ACCEPTED, Rejections, parse as parse_rejections};

/// First wait before persisting an acknowledgement again after a failure (a full disk); it
/// doubles up to [`ACK_RETRY_CAP`].
const ACK_RETRY: Duration = Duration::from_millis(100);
const ACK_RETRY_CAP: Duration = Duration::from_secs(2);

/// Requests on their way at once unless set otherwise ([`Forwarder::with_max_in_flight`]).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;

/// Sends what the spool holds to the collector: batches in spool order, several requests on
/// their way at once, the spool acknowledged in order up to the oldest batch not yet settled.
pub struct Forwarder {
    batcher: Batcher,
    limits: BatchLimits,
    max_in_flight: usize,
    spool: Spool,
    checkpoints: CheckpointStore,
    delivery: Delivery,
}

/// What delivering one batch needs; each batch in flight has its own copy.
#[derive(Clone)]
struct Delivery {
    upstream: Upstream,
    backoff: Backoff,
    quarantine: Quarantine,
    metrics: Arc<Metrics>,
    /// A wait the collector asked for (gRPC `RetryInfo`), used once instead of a shorter one.
    retry_hint: Option<Duration>,
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
    /// Told to stop before the rejections were quarantined: the batch stays in the spool.
    Stopped,
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
            batcher,
            limits,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            spool,
            checkpoints,
            delivery: Delivery {
                upstream,
                backoff,
                quarantine,
                metrics,
                retry_hint: None,
            },
        }
    }

    /// At most `n` (at least 1) requests on their way at once (`batch.max_in_flight`).
    pub fn with_max_in_flight(mut self, n: usize) -> Forwarder {
        self.max_in_flight = n.max(1);
        self
    }

    /// Forwards until `stop` turns true. Requests in flight are finished (and acknowledged in
    /// order); a batch waiting for a retry is left in the spool with everything after it (sent
    /// again after a restart, with the same ids).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let Forwarder {
            mut batcher,
            limits,
            max_in_flight,
            spool,
            checkpoints,
            delivery,
        } = self;
        // Batches are read ahead in a task of their own: a batch being filled is never given
        // up half-way (its records would be skipped by the acknowledgement of later ones).
        let (tx, mut batches) = mpsc::channel::<Batch>(1);
        let mut reader_stop = stop.clone();
        let reader = tokio::spawn(async move {
            loop {
                let batch = tokio::select! {
                    batch = batcher.next(limits) => batch,
                    _ = stopped(&mut reader_stop) => return,
                };
                if tx.send(batch).await.is_err() {
                    return;
                }
            }
        });
        // Acknowledgements are persisted by a task of their own, so that sending goes on
        // meanwhile; positions that arrive while one is being written are written together.
        let (acks, acked) = watch::channel(None);
        let acker = tokio::spawn(persist_acks(
            spool,
            checkpoints,
            delivery.metrics.clone(),
            acked,
        ));
        let task_stop = stop.clone();
        let mut in_flight: VecDeque<(JoinHandle<bool>, Option<SpoolPos>)> = VecDeque::new();
        let mut stalled = false;
        loop {
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => break,
                settled = async { (&mut in_flight.front_mut().expect("checked").0).await },
                    if !in_flight.is_empty() =>
                {
                    let (_, end) = in_flight.pop_front().expect("checked");
                    if !settled.expect("delivery does not panic") {
                        stalled = true;
                        break;
                    }
                    if end.is_some() {
                        acks.send_replace(end);
                    }
                }
                batch = batches.recv(), if in_flight.len() < max_in_flight => {
                    let Some(batch) = batch else { break };
                    let end = batch.end;
                    let task = tokio::spawn(delivery.clone().deliver(batch, task_stop.clone()));
                    in_flight.push_back((task, end));
                }
            }
        }
        // Stopping: requests in flight finish; those waiting for a retry give up at once.
        let mut end = None;
        for (task, next) in in_flight {
            let settled = task.await.expect("delivery does not panic");
            stalled |= !settled;
            if !stalled {
                end = next.or(end);
            }
        }
        if end.is_some() {
            acks.send_replace(end);
        }
        drop(acks);
        acker.await.expect("acknowledgement does not panic");
        reader.abort();
        let _ = reader.await;
    }
}

impl Delivery {
    /// Delivers one batch until every record is accepted or quarantined; false if stopped.
    async fn deliver(mut self, batch: Batch, mut stop: watch::Receiver<bool>) -> bool {
        let stop = &mut stop;
        if !batch.unreadable.is_empty() && !self.write_quarantine(&batch.unreadable, stop).await {
            return false;
        }
        let mut groups: VecDeque<Vec<usize>> = VecDeque::new();
        if !batch.is_empty() {
            groups.push_back((0..batch.len()).collect());
        }
        while let Some(group) = groups.pop_front() {
            loop {
                match self.attempt(&batch, &group, stop).await {
                    Outcome::Settled => break,
                    Outcome::Stopped => return false,
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
                            _ = stopped(stop) => return false,
                        }
                    }
                }
            }
        }
        true
    }

    async fn attempt(
        &mut self,
        batch: &Batch,
        group: &[usize],
        stop: &mut watch::Receiver<bool>,
    ) -> Outcome {
        let message = if group.len() == batch.len() {
            request::encode_request(FRAME_HEADER, std::iter::once(&batch.records[..]))
        } else {
            request::encode_request(FRAME_HEADER, group.iter().map(|&i| batch.field(i)))
        };
        self.metrics.records_forwarded.inc_by(group.len() as u64);
        match self.upstream.export(message).await {
            Ok(response) => {
                self.backoff.reset();
                self.on_accepted(batch, group, response, stop).await
            }
            Err(status) => self.on_status(batch, group, status, stop).await,
        }
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
        if !self.reject(batch, group, &found, stop).await {
            return Outcome::Stopped;
        }
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
            return self.quarantine_all(batch, &rest, &reason, stop).await;
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
                if !self.reject(batch, group, &found, stop).await {
                    Outcome::Stopped
                } else if found.unnamed == 0 {
                    Outcome::Settled
                } else if found.named.is_empty() {
                    if group.len() == 1 {
                        self.quarantine_all(batch, group, &message, stop).await
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
                    self.quarantine_all(batch, group, &message, stop).await
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

    /// Quarantines the named rejections with the collector's reasons; false if stopped first.
    async fn reject(
        &mut self,
        batch: &Batch,
        group: &[usize],
        found: &Rejections,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let entries: Vec<QuarantineEntry> = found
            .named
            .iter()
            .map(|(&i, reason)| rejected_entry(batch, group[i], reason))
            .collect();
        if !self.write_quarantine(&entries, stop).await {
            return false;
        }
        self.metrics.records_rejected.inc_by(entries.len() as u64);
        true
    }

    /// Quarantines these records with one reason.
    async fn quarantine_all(
        &mut self,
        batch: &Batch,
        indices: &[usize],
        reason: &str,
        stop: &mut watch::Receiver<bool>,
    ) -> Outcome {
        let entries: Vec<QuarantineEntry> = indices
            .iter()
            .map(|&i| rejected_entry(batch, i, reason))
            .collect();
        if !self.write_quarantine(&entries, stop).await {
            return Outcome::Stopped;
        }
        self.metrics.records_rejected.inc_by(entries.len() as u64);
        Outcome::Settled
    }

    /// Writes quarantine entries, retrying until they are durable (they must be before the
    /// spool is acknowledged past them); false if stopped first.
    async fn write_quarantine(
        &mut self,
        entries: &[QuarantineEntry],
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut backoff = self.backoff.clone();
        backoff.reset();
        loop {
            let quarantine = self.quarantine.clone();
            let owned = entries.to_vec();
            let result = tokio::task::spawn_blocking(move || quarantine.write(&owned))
                .await
                .expect("quarantine write does not panic");
            match result {
                Ok(()) => return true,
                Err(e) => {
                    tracing::error!(error = %e, "cannot write the quarantine; retrying");
                    self.metrics.set_last_error(e.to_string());
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                        _ = stopped(stop) => return false,
                    }
                }
            }
        }
    }
}

/// Persists each acknowledged position sent (the newest when several arrived meanwhile) until
/// the sender is dropped. A failed attempt (a full disk) is made again after a wait, or at once
/// when a newer position arrives, so the spool is freed once the disk takes writes again even
/// if nothing more is sent; the first failure of a run is logged, each is counted.
async fn persist_acks(
    spool: Spool,
    checkpoints: CheckpointStore,
    metrics: Arc<Metrics>,
    mut positions: watch::Receiver<Option<SpoolPos>>,
) {
    let mut retry = None;
    loop {
        let open = match retry {
            None => positions.changed().await.is_ok(),
            Some(wait) => tokio::select! {
                changed = positions.changed() => changed.is_ok(),
                _ = tokio::time::sleep(wait) => true,
            },
        };
        let end = *positions.borrow_and_update();
        let result = match end {
            Some(end) => acknowledge(&spool, &checkpoints, end).await,
            None => Ok(()),
        };
        metrics.spool_bytes.set(spool.stats().used_bytes);
        retry = match result {
            Ok(()) => None,
            Err((file, disk_full, e)) => {
                if retry.is_none() {
                    tracing::error!(error = %e, "cannot acknowledge the spool; retrying");
                }
                metrics.write_failed(file, disk_full, e);
                Some(retry.map_or(ACK_RETRY, |w: Duration| (w * 2).min(ACK_RETRY_CAP)))
            }
        };
        if !open {
            return;
        }
    }
}

/// Acknowledges the spool up to `end`; then persists the checkpoints and deletes the segments
/// that are entirely acknowledged. On failure: which file (the metric's label), whether the
/// disk is full, the error.
async fn acknowledge(
    spool: &Spool,
    checkpoints: &CheckpointStore,
    end: SpoolPos,
) -> Result<(), (&'static str, bool, String)> {
    let spool = spool.clone();
    let checkpoints = checkpoints.clone();
    let failed = |file| move |e: SpoolError| (file, e.is_disk_full(), e.to_string());
    tokio::task::spawn_blocking(move || {
        spool.ack(end).map_err(failed("acked"))?;
        if spool.has_deletable() {
            checkpoints
                .persist()
                .map_err(|e| ("checkpoints", e.is_disk_full(), e.to_string()))?;
            spool.delete_acked().map_err(failed("spool"))?;
        }
        Ok(())
    })
    .await
    .expect("acknowledgement does not panic")
}

/// The quarantine entry of a record the collector rejected: the record as JSON (read back from
/// its LogRecord), or the LogRecord as JSON should that fail.
fn rejected_entry(batch: &Batch, index: usize, reason: &str) -> QuarantineEntry {
    let log = batch.log_record(index);
    let json = match crate::encoded::decode_record(log) {
        Ok(record) => serde_json::to_vec(&record).expect("a record serialises"),
        Err(_) => LogRecord::decode(log)
            .ok()
            .and_then(|l| serde_json::to_vec(&l).ok())
            .unwrap_or_else(|| log.to_vec()),
    };
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

/// Resolves once `stop` is true.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
