//! The agent's sink for OTLP requests: converting LogRecords into spool entries, spooling
//! them, and counting what was refused. Senders are not authenticated (the agent listens for
//! its own host's applications).

use std::sync::Arc;
use std::time::Duration;

use codestax_common::otlp::record_from_log;
use codestax_common::{RecordErrors, Rules};
use codestax_otlp_receiver::{
    Bearer, Exported, Logs, LogsSink, MAX_LISTED_REJECTIONS, Refusal, RefusalKind, Transport,
    rejection_summary,
};
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;
use crate::spool::{Spool, SpoolEntry, SpoolError};

/// The retry hint given when the spool is full or failing.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Why a request could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("the agent's spool is full (spool.max_bytes reached); retry later")]
    SpoolFull,
    #[error("the request is larger than the agent's whole spool")]
    TooLarge,
    #[error(
        "the disk under the agent's spool is full (no space left on device); nothing was stored; retry later"
    )]
    DiskFull,
    #[error("the agent cannot write its spool (disk error); nothing was stored; retry later")]
    Unavailable,
}

impl From<IntakeError> for Refusal {
    fn from(e: IntakeError) -> Refusal {
        let message = e.to_string();
        match e {
            IntakeError::SpoolFull => {
                Refusal::new(RefusalKind::Full, message).retry_after(RETRY_AFTER)
            }
            IntakeError::TooLarge => Refusal::new(RefusalKind::TooLarge, message),
            IntakeError::DiskFull | IntakeError::Unavailable => {
                Refusal::new(RefusalKind::Unavailable, message).retry_after(RETRY_AFTER)
            }
        }
    }
}

/// A request converted: the spool entries of its valid records and why the others were
/// rejected (the first [`MAX_LISTED_REJECTIONS`] listed, all counted).
#[derive(Debug, Default)]
pub struct Converted {
    entries: Vec<SpoolEntry>,
    listed: Vec<(usize, String)>,
    rejected: u64,
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

    /// Spools the converted records; returns once they are fsynced.
    async fn spool(&self, converted: Converted) -> Result<Exported, IntakeError> {
        let Converted {
            entries,
            listed,
            rejected,
        } = converted;
        if rejected > 0 {
            Metrics::count(&self.metrics.otlp_refused, "reason", "invalid", rejected);
        }
        let exported = Exported {
            accepted: entries.len() as u64,
            rejected,
            rejections: rejection_summary(
                listed,
                rejected.saturating_sub(MAX_LISTED_REJECTIONS as u64),
            ),
        };
        if entries.is_empty() {
            return Ok(exported);
        }
        let n = entries.len() as u64;
        match self.spool.append(entries).await {
            Ok(_) => {
                Metrics::count(&self.metrics.records_spooled, "source", "otlp", n);
                self.metrics.spool_bytes.set(self.spool.stats().used_bytes);
                Ok(exported)
            }
            Err(SpoolError::Full { .. }) => {
                Metrics::count(&self.metrics.otlp_refused, "reason", "spool_full", n);
                Err(IntakeError::SpoolFull)
            }
            Err(SpoolError::TooLarge { .. }) => Err(IntakeError::TooLarge),
            // The spool's writer logs the first failure of a run; each refusal is counted.
            Err(e @ (SpoolError::DiskFull { .. } | SpoolError::Segment { .. })) => {
                let disk_full = e.is_disk_full();
                self.metrics.write_failed("spool", disk_full, e.to_string());
                let reason = if disk_full {
                    "spool_disk_full"
                } else {
                    "spool_write_error"
                };
                Metrics::count(&self.metrics.otlp_refused, "reason", reason, n);
                Err(if disk_full {
                    IntakeError::DiskFull
                } else {
                    IntakeError::Unavailable
                })
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot spool OTLP records");
                self.metrics.set_last_error(e.to_string());
                Metrics::count(&self.metrics.otlp_refused, "reason", "unavailable", n);
                Err(IntakeError::Unavailable)
            }
        }
    }
}

impl LogsSink for OtlpIntake {
    type Sender = ();
    type Batch = Converted;

    fn authorize(&self, _: Bearer<'_>) -> Result<(), Refusal> {
        Ok(())
    }

    fn convert(&self, _: &(), logs: Logs<'_>) -> Result<Converted, Refusal> {
        convert(logs)
    }

    async fn submit(&self, _: (), batch: Converted, _: Transport) -> Result<Exported, Refusal> {
        Ok(self.spool(batch).await?)
    }
}

fn convert(logs: Logs<'_>) -> Result<Converted, Refusal> {
    let rules = Rules {
        max_record_bytes: codestax_common::DEFAULT_MAX_RECORD_BYTES,
        allow_custom_actions: true,
        now: chrono::Utc::now(),
        collector_entries: false,
    };
    let mut converted = Converted::default();
    // An encoded LogRecord over 4x the record limit is rejected undecoded (as the collector does).
    logs.for_each(rules.max_record_bytes.saturating_mul(4), |item| {
        let decoded = match &item.log {
            Ok(log) => record_from_log(log, item.resource, None, &rules),
            Err(unread) => Err(RecordErrors::one("record", unread.to_string())),
        };
        match decoded {
            Ok(mut record) => {
                if record.id.is_none() {
                    record.id = Some(content_id(&record.canonical_json()));
                }
                converted.entries.push(SpoolEntry::record(&record));
            }
            Err(errors) => {
                converted.rejected += 1;
                if converted.listed.len() < MAX_LISTED_REJECTIONS {
                    converted.listed.push((item.position, errors.to_string()));
                }
            }
        }
    })?;
    Ok(converted)
}

/// The id of an OTLP record sent without one: a hash of its content, so a sender's retry of
/// the same record is removed by the collector's dedupe.
fn content_id(canonical_json: &str) -> String {
    let digest = Sha256::digest(canonical_json.as_bytes());
    format!("o-{}", hex::encode(&digest[..16]))
}
