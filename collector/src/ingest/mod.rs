//! Ingest: turns received batches (NDJSON, OTLP over HTTP or gRPC) into durable records.
//! Each record is checked on its own; the valid rest of a batch goes through.

mod body;
pub mod grpc;
mod ndjson;
mod otlp;
mod rate;

pub use body::{BodyError, read_body};
pub use ndjson::decode_ndjson;
pub use otlp::decode_otlp;
pub use rate::{RateLimit, RateLimited, RateLimiter, RateScope};

use crate::metrics::Metrics;
use crate::store::{Admission, Store, StoreError};
use chrono::Utc;
use codestax_common::api::RejectedRecord;
use codestax_common::{AuditRecord, FieldError, RecordErrors, Rules};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Which receiver a batch came through (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receiver {
    Ndjson,
    OtlpHttp,
    OtlpGrpc,
    Internal,
}

impl Receiver {
    pub fn as_str(self) -> &'static str {
        match self {
            Receiver::Ndjson => "ndjson",
            Receiver::OtlpHttp => "otlp_http",
            Receiver::OtlpGrpc => "otlp_grpc",
            Receiver::Internal => "internal",
        }
    }
}

/// One decoded entry of a batch: a record, or why it is rejected. `position` is 1-based.
pub type Candidate = Result<AuditRecord, RejectedRecord>;

/// What became of a batch.
#[derive(Debug, Clone, Default)]
pub struct IngestOutcome {
    /// Durable now, duplicates included.
    pub accepted: u64,
    /// Of `accepted`, already stored before: acknowledged, not stored twice.
    pub duplicates: u64,
    pub rejected: Vec<RejectedRecord>,
}

impl IngestOutcome {
    /// One line per rejected record, for OTLP's `partial_success.error_message`.
    pub fn rejection_summary(&self, max_lines: usize) -> String {
        let mut lines: Vec<String> = self
            .rejected
            .iter()
            .take(max_lines)
            .map(|r| {
                let errors = RecordErrors(r.errors.clone());
                format!("record {}: {errors}", r.line)
            })
            .collect();
        if self.rejected.len() > max_lines {
            lines.push(format!("... and {} more", self.rejected.len() - max_lines));
        }
        lines.join("\n")
    }
}

/// Why a batch could not be taken at all.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("storage is full; nothing of this batch was stored, retry later")]
    StorageFull,
    #[error("storage failed: {0}")]
    Storage(String),
}

/// The rules of ingest, fixed at start.
#[derive(Debug, Clone, Copy)]
pub struct IngestSettings {
    pub max_record_bytes: usize,
    pub allow_custom_actions: bool,
}

/// The ingest pipeline shared by every receiver.
#[derive(Clone)]
pub struct Ingest {
    store: Store,
    settings: IngestSettings,
    metrics: Arc<Metrics>,
    rate_limiter: Arc<RateLimiter>,
}

impl Ingest {
    pub fn new(store: Store, settings: IngestSettings, metrics: Arc<Metrics>) -> Self {
        Ingest {
            store,
            settings,
            metrics,
            rate_limiter: Arc::new(RateLimiter::default()),
        }
    }

    /// The same pipeline with ingest rate limits (none by default).
    pub fn with_rate_limiter(mut self, rate_limiter: RateLimiter) -> Self {
        self.rate_limiter = Arc::new(rate_limiter);
        self
    }

    /// Checks a batch of `records` sent with key `key_id` of `org` against the rate limits,
    /// before it is decoded further or submitted: every record counts, valid or not. A refused
    /// batch is counted in the metrics and takes nothing from any allowance.
    pub fn admit(&self, key_id: &str, org: &str, records: usize) -> Result<(), RateLimited> {
        self.rate_limiter
            .admit(key_id, org, records as u64)
            .inspect_err(|refused| {
                self.metrics
                    .record_rate_limited(refused.scope.as_str(), org, refused.records);
            })
    }

    /// The validation rules as of now.
    pub fn rules(&self) -> Rules {
        Rules {
            max_record_bytes: self.settings.max_record_bytes,
            allow_custom_actions: self.settings.allow_custom_actions,
            now: Utc::now(),
        }
    }

    /// The store behind the pipeline (for its statistics).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn settings(&self) -> IngestSettings {
        self.settings
    }

    /// Stores the valid candidates of a batch sent with a key of `key_org`: records for another
    /// org are rejected, missing ids are derived from content, `received_at` is stamped. Returns
    /// once every accepted record is durable.
    pub async fn submit(
        &self,
        key_org: &str,
        candidates: Vec<Candidate>,
        receiver: Receiver,
    ) -> Result<IngestOutcome, IngestError> {
        let now = codestax_common::time::truncate_to_micros(Utc::now());
        let mut outcome = IngestOutcome::default();
        let mut records = Vec::with_capacity(candidates.len());
        for (i, candidate) in candidates.into_iter().enumerate() {
            match candidate {
                Ok(mut record) if record.org_id == key_org => {
                    if record.id.is_none() {
                        record.id = Some(content_id(&record));
                    }
                    record.received_at = Some(now);
                    records.push(record);
                }
                Ok(record) => outcome.rejected.push(RejectedRecord {
                    line: i + 1,
                    id: record.id.clone(),
                    errors: vec![FieldError::new(
                        "org_id",
                        format!(
                            "this key ingests for org {key_org:?} only, not {:?}",
                            record.org_id
                        ),
                    )],
                }),
                Err(rejected) => outcome.rejected.push(rejected),
            }
        }
        for r in &outcome.rejected {
            let reason = r.errors.first().map_or("record", |e| e.field.as_str());
            self.metrics.record_rejected(receiver.as_str(), reason);
        }
        if records.is_empty() {
            return Ok(outcome);
        }
        let admissions = self.store.submit(records).await.map_err(|e| match e {
            StoreError::Storage {
                storage_full: true, ..
            } => IngestError::StorageFull,
            other => IngestError::Storage(other.to_string()),
        })?;
        for a in &admissions {
            outcome.accepted += 1;
            if matches!(a, Admission::Duplicate) {
                outcome.duplicates += 1;
            }
        }
        self.metrics.record_accepted(
            receiver.as_str(),
            outcome.accepted - outcome.duplicates,
            outcome.duplicates,
        );
        Ok(outcome)
    }
}

/// The id of a record that came without one: a hash of its content, so the same record sent twice
/// is stored once.
pub fn content_id(record: &AuditRecord) -> String {
    let mut r = record.clone();
    r.id = None;
    r.received_at = None;
    let digest = Sha256::digest(r.canonical_json().as_bytes());
    format!("sha256-{}", hex::encode(&digest[..16]))
}
