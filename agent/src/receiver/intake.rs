//! What both receivers share: converting a request into records, spooling them, and the
//! rejection message format (the collector's: `record <position>: <reasons>`, at most 50
//! lines, then `... and N more`).

use std::sync::Arc;
use std::time::Duration;

use codestax_common::Rules;
use codestax_common::otlp::record_from_log;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;
use crate::spool::{Spool, SpoolEntry, SpoolError};

/// Requests with more records than this are converted off the async worker threads.
const CONVERT_INLINE_MAX: usize = 64;
/// Rejection lines listed before `... and N more`.
const MAX_LINES: usize = 50;
/// The retry hint given when the spool is full.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Why a request could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("the agent's spool is full; retry later")]
    SpoolFull,
    #[error("the request is larger than the agent's whole spool")]
    TooLarge,
    #[error("the agent cannot store records right now")]
    Unavailable,
}

/// How a request went: records accepted and the (1-based position, reason) of each rejected.
#[derive(Debug, Default)]
pub struct ExportOutcome {
    pub accepted: usize,
    pub rejected: Vec<(usize, String)>,
}

impl ExportOutcome {
    /// Nothing accepted and something rejected.
    pub fn nothing_accepted(&self) -> bool {
        self.accepted == 0 && !self.rejected.is_empty()
    }
}

/// Takes OTLP requests into the spool.
#[derive(Clone)]
pub struct OtlpIntake {
    spool: Spool,
    metrics: Arc<Metrics>,
}

impl OtlpIntake {
    pub fn new(spool: Spool, metrics: Arc<Metrics>) -> OtlpIntake {
        OtlpIntake { spool, metrics }
    }

    /// Converts and spools a request; returns once the accepted records are fsynced.
    pub async fn export(
        &self,
        request: ExportLogsServiceRequest,
    ) -> Result<ExportOutcome, IntakeError> {
        let count: usize = request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        let (entries, outcome) = if count <= CONVERT_INLINE_MAX {
            convert(&request)
        } else {
            tokio::task::spawn_blocking(move || convert(&request))
                .await
                .map_err(|_| IntakeError::Unavailable)?
        };
        if !outcome.rejected.is_empty() {
            Metrics::count(
                &self.metrics.otlp_refused,
                "reason",
                "invalid",
                outcome.rejected.len() as u64,
            );
        }
        if entries.is_empty() {
            return Ok(outcome);
        }
        let n = entries.len() as u64;
        match self.spool.append(entries).await {
            Ok(_) => {
                Metrics::count(&self.metrics.records_spooled, "source", "otlp", n);
                self.metrics.spool_bytes.set(self.spool.stats().used_bytes);
                Ok(outcome)
            }
            Err(SpoolError::Full { .. }) => {
                Metrics::count(&self.metrics.otlp_refused, "reason", "spool_full", n);
                Err(IntakeError::SpoolFull)
            }
            Err(SpoolError::TooLarge { .. }) => Err(IntakeError::TooLarge),
            Err(e) => {
                tracing::error!(error = %e, "cannot spool OTLP records");
                self.metrics.set_last_error(e.to_string());
                Err(IntakeError::Unavailable)
            }
        }
    }
}

fn convert(request: &ExportLogsServiceRequest) -> (Vec<SpoolEntry>, ExportOutcome) {
    let rules = Rules {
        max_record_bytes: codestax_common::DEFAULT_MAX_RECORD_BYTES,
        allow_custom_actions: true,
        now: chrono::Utc::now(),
        collector_entries: false,
    };
    let mut entries = Vec::new();
    let mut outcome = ExportOutcome::default();
    let mut position = 0;
    for resource_logs in &request.resource_logs {
        let resource = resource_logs
            .resource
            .as_ref()
            .map_or(&[][..], |r| r.attributes.as_slice());
        for scope_logs in &resource_logs.scope_logs {
            for log in &scope_logs.log_records {
                position += 1;
                match record_from_log(log, resource, None, &rules) {
                    Ok(mut record) => {
                        if record.id.is_none() {
                            record.id = Some(content_id(&record.canonical_json()));
                        }
                        entries.push(SpoolEntry::record(&record));
                        outcome.accepted += 1;
                    }
                    Err(errors) => outcome.rejected.push((position, errors.to_string())),
                }
            }
        }
    }
    (entries, outcome)
}

/// The id of an OTLP record sent without one: a hash of its content, so a sender's retry of
/// the same record is removed by the collector's dedupe.
fn content_id(canonical_json: &str) -> String {
    let digest = Sha256::digest(canonical_json.as_bytes());
    format!("o-{}", hex::encode(&digest[..16]))
}

/// The rejection lines for a response.
pub fn rejection_message(rejected: &[(usize, String)]) -> String {
    let mut lines: Vec<String> = rejected
        .iter()
        .take(MAX_LINES)
        .map(|(position, reason)| format!("record {position}: {reason}"))
        .collect();
    if rejected.len() > MAX_LINES {
        lines.push(format!("... and {} more", rejected.len() - MAX_LINES));
    }
    lines.join("\n")
}
