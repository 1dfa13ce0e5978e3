//! Ingest: turns received batches (NDJSON, OTLP over HTTP or gRPC) into durable records.
//! Each record is checked on its own; the valid rest of a batch goes through. The transports
//! (bodies, content types, the OTLP answers) are `codestax-otlp-receiver`'s and the API's.

mod ndjson;
mod otlp;
mod rate;

pub use codestax_otlp_receiver::MAX_LISTED_REJECTIONS;
pub use ndjson::{decode_ndjson, decode_ndjson_into};
pub use otlp::decode_otlp;
pub use rate::{RateLimit, RateLimited, RateLimiter, RateScope};

use crate::cluster::{Appended, JetStreamLog};
use crate::health::{Failure, Health, Part};
use crate::metrics::Metrics;
use crate::retention::RetentionPolicy;
use crate::store::{Admission, Store, StoreError};
use chrono::{DateTime, Utc};
use codestax_common::api::{EXPIRED_ON_ARRIVAL, RejectedRecord};
use codestax_common::schema::{Field, Object};
use codestax_common::{
    Actor, ActorKind, AuditRecord, FieldError, Metadata, Outcome, Provenance, RESERVED_ID_PREFIX,
    RecordErrors, Rules, Target, TargetKind, check_app_record, check_reserved_id,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Which receiver a batch came through (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receiver {
    Ndjson,
    OtlpHttp,
    OtlpGrpc,
    /// `POST /api/v1/import`: history brought in by `codestax import`.
    Import,
    Internal,
}

impl Receiver {
    pub fn as_str(self) -> &'static str {
        match self {
            Receiver::Ndjson => "ndjson",
            Receiver::OtlpHttp => "otlp_http",
            Receiver::OtlpGrpc => "otlp_grpc",
            Receiver::Import => "import",
            Receiver::Internal => "internal",
        }
    }
}

/// One decoded entry of a batch: a record, or why it is rejected. `position` is 1-based.
pub type Candidate = Result<AuditRecord, RejectedRecord>;

/// A decoded batch: the records that passed decoding, each with its 1-based position, and what
/// was rejected. Its memory is the records it keeps plus a fixed cap, whatever the mix.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<(usize, AuditRecord)>,
    pub rejections: Rejections,
}

impl Batch {
    /// Entries decoded, valid or not: what a batch costs against the rate limits.
    pub fn len(&self) -> usize {
        self.records.len() + self.rejections.total() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds the outcome of decoding entry `position`; `id` is asked only if the rejection is
    /// listed.
    pub fn push(
        &mut self,
        position: usize,
        decoded: Result<AuditRecord, RecordErrors>,
        id: impl FnOnce() -> Option<String>,
    ) {
        match decoded {
            Ok(record) => self.records.push((position, record)),
            Err(errors) => self.rejections.push(position, errors.0, id),
        }
    }
}

impl From<Vec<Candidate>> for Batch {
    fn from(candidates: Vec<Candidate>) -> Self {
        let mut batch = Batch::default();
        for (i, candidate) in candidates.into_iter().enumerate() {
            match candidate {
                Ok(record) => batch.records.push((i + 1, record)),
                Err(r) => batch.rejections.push(r.line, r.errors, || r.id),
            }
        }
        batch
    }
}

/// The rejected entries of a batch: the first [`MAX_LISTED_REJECTIONS`] in full (or all, for an
/// import, whose rejects file names every line), every one counted (in total and by metrics
/// reason).
#[derive(Debug, Clone, Default)]
pub struct Rejections {
    listed: Vec<RejectedRecord>,
    total: u64,
    by_reason: BTreeMap<&'static str, u64>,
    /// List every rejection: the batch's size bounds them (the body limit).
    list_all: bool,
}

/// The metrics reason of records older than their org's retention, refused on import.
pub const EXPIRED_ON_ARRIVAL_LABEL: &str = "expired_on_arrival";

impl Rejections {
    /// Rejections that list every one, not only the first [`MAX_LISTED_REJECTIONS`].
    pub fn listing_all() -> Rejections {
        Rejections {
            list_all: true,
            ..Rejections::default()
        }
    }

    pub fn push(
        &mut self,
        position: usize,
        errors: Vec<FieldError>,
        id: impl FnOnce() -> Option<String>,
    ) {
        let field = errors.first().map_or("record", |e| e.field.as_str());
        let label = reason_label(field);
        self.push_labelled(label, position, errors, id);
    }

    /// A rejection counted under the metrics reason `label` rather than its field's.
    pub fn push_labelled(
        &mut self,
        label: &'static str,
        position: usize,
        errors: Vec<FieldError>,
        id: impl FnOnce() -> Option<String>,
    ) {
        self.total += 1;
        *self.by_reason.entry(label).or_default() += 1;
        if self.list_all || self.listed.len() < MAX_LISTED_REJECTIONS {
            self.listed.push(RejectedRecord {
                line: position,
                id: id(),
                errors,
            });
        }
    }

    /// Every rejection, listed or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The rejections counted under metrics reason `label`.
    pub fn counted(&self, label: &str) -> u64 {
        self.by_reason.get(label).copied().unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The first rejections, in batch order.
    pub fn listed(&self) -> &[RejectedRecord] {
        &self.listed
    }

    /// Rejections counted but not listed.
    pub fn unlisted(&self) -> u64 {
        self.total - self.listed.len() as u64
    }

    /// One line per listed rejection, then "... and N more" (OTLP's `error_message`).
    pub fn summary(&self) -> String {
        codestax_otlp_receiver::rejection_summary(
            self.listed
                .iter()
                .map(|r| (r.line, RecordErrors(r.errors.clone()))),
            self.unlisted(),
        )
    }
}

/// The metrics label of a rejection: the top-level field at fault, or `unknown_field`. Field
/// paths can carry any key a client sends; the label set must stay bounded.
fn reason_label(field: &str) -> &'static str {
    let top = field.split(['.', '[']).next().unwrap_or_default();
    match top {
        // Not fields: the record as a whole, and an OTLP body that is not a record.
        "record" => "record",
        "body" => "body",
        _ => Field::from_key(Object::Record, top).map_or("unknown_field", Field::key),
    }
}

/// What became of a batch.
#[derive(Debug, Clone, Default)]
pub struct IngestOutcome {
    /// Durable now, duplicates included.
    pub accepted: u64,
    /// Of `accepted`, already stored before: acknowledged, not stored twice.
    pub duplicates: u64,
    pub rejected: Rejections,
}

/// Why a batch could not be taken at all; nothing of it was stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The write-ahead log could not write the batch, or the index cannot write (then new
    /// records are refused before the WAL: it would only grow).
    #[error("{0}; nothing of this batch was stored, retry later")]
    Unavailable(Failure),
    #[error("storage failed: {0}")]
    Storage(String),
    /// Cluster mode: the JetStream log did not acknowledge every record of the batch. Some may
    /// be in it; a resend is deduplicated (same ids).
    #[error("the cluster's log did not acknowledge the batch ({0}); retry it")]
    Log(String),
}

/// Why one of the collector's own entries was not stored.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The checks refused it (a defect of the entry): the errors found.
    #[error("the entry was refused: {0}")]
    Refused(String),
}

impl EntryError {
    /// Why the WAL or the index cannot write, if that is the reason.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            EntryError::Ingest(e) => e.failure(),
            EntryError::Refused(_) => None,
        }
    }
}

impl IngestError {
    /// Why the WAL or the index cannot write, if that is the reason.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            IngestError::Unavailable(failure) => Some(failure),
            IngestError::Storage(_) | IngestError::Log(_) => None,
        }
    }
}

/// Largest of the collector's own entries (views, exports, changes), in bytes of canonical JSON:
/// a fixed limit, not `ingest.max_record_bytes`. That setting bounds what apps send (as low as
/// 1 KiB); the collector's entries are bounded by the API's own fixed limits instead (request
/// targets, saved views' and streams' filters), which are chosen so every entry fits this one,
/// so no setting can make a read or a change impossible to record, and so refused.
pub const MAX_COLLECTOR_ENTRY_BYTES: usize = codestax_common::DEFAULT_MAX_RECORD_BYTES;

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
    /// Cluster mode: records go to the JetStream log instead of the local store (its owner
    /// stores them).
    log: Option<JetStreamLog>,
    settings: IngestSettings,
    metrics: Arc<Metrics>,
    rate_limiter: Arc<RateLimiter>,
    /// Senders' records are refused while the index cannot write.
    health: Health,
    /// Records older than their org's retention are refused as expired on arrival, not stored
    /// to be hidden and deleted ([`Ingest::with_retention`]; none: every time is taken).
    retention: Option<Arc<RetentionPolicy>>,
}

impl Ingest {
    pub fn new(
        store: Store,
        settings: IngestSettings,
        metrics: Arc<Metrics>,
        health: Health,
    ) -> Self {
        Ingest {
            store,
            log: None,
            settings,
            metrics,
            rate_limiter: Arc::new(RateLimiter::default()),
            health,
            retention: None,
        }
    }

    /// The same pipeline refusing records older than their org's retention (at the same bound
    /// reads and the janitor use; none while the org is on legal hold) as expired on arrival:
    /// taken, they would be hidden at once and deleted at the janitor's next run, which is a
    /// silent drop that the sender was told was a success.
    pub fn with_retention(mut self, retention: Arc<RetentionPolicy>) -> Self {
        self.retention = Some(retention);
        self
    }

    /// The same pipeline publishing to the cluster's JetStream `log` instead of the local store.
    pub fn with_log(mut self, log: JetStreamLog) -> Self {
        self.log = Some(log);
        self
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
            collector_entries: false,
        }
    }

    /// The time before which a record of `org` has expired at `now` (none under legal hold, or
    /// without [`Ingest::with_retention`]).
    pub fn expires_before(&self, org: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.retention
            .as_ref()
            .and_then(|r| r.for_org(org).expires_before(now))
    }

    /// The rules of the collector's own entries, as of now: [`MAX_COLLECTOR_ENTRY_BYTES`], and
    /// what belongs to the collector alone allowed.
    pub fn collector_entry_rules(&self) -> Rules {
        Rules {
            max_record_bytes: MAX_COLLECTOR_ENTRY_BYTES,
            collector_entries: true,
            ..self.rules()
        }
    }

    /// The store behind the pipeline (for its statistics).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn settings(&self) -> IngestSettings {
        self.settings
    }

    /// Stores the valid records of a batch written into `key_org`'s log by `writer`: the
    /// collector itself, or the ingest key that sent it. Records for another org are rejected,
    /// and so is, in an ingest key's batch, anything that belongs to the collector alone
    /// ([`check_app_record`], whichever receiver parsed it); missing ids are derived from
    /// content; `received_at` and `provenance` are stamped. Returns once every accepted record is
    /// durable.
    ///
    /// While the index cannot write, a sender's batch is refused whole (the collector's own
    /// records still go to the WAL, indexed once the index writes again): acknowledging more
    /// would only grow the WAL and what waits to be searchable.
    pub async fn submit(
        &self,
        key_org: &str,
        writer: Provenance,
        batch: impl Into<Batch>,
        receiver: Receiver,
    ) -> Result<IngestOutcome, IngestError> {
        if receiver != Receiver::Internal
            && let Some(failure) = self.health.failure(Part::Index)
        {
            return Err(IngestError::Unavailable(failure));
        }
        let Batch {
            records: decoded,
            rejections,
        } = batch.into();
        let now = codestax_common::time::truncate_to_micros(Utc::now());
        // A sender's records only: the collector's own entries are not late sends.
        let expires_before = match receiver {
            Receiver::Internal => None,
            _ => self.expires_before(key_org, now),
        };
        let mut outcome = IngestOutcome {
            rejected: rejections,
            ..IngestOutcome::default()
        };
        let mut records = Vec::with_capacity(decoded.len());
        // Each record's place in the batch, for the store's refusals.
        let mut positions = Vec::with_capacity(decoded.len());
        for (position, mut record) in decoded {
            if record.org_id != key_org {
                let error = FieldError::new(
                    "org_id",
                    format!(
                        "this key ingests for org {key_org:?} only, not {:?}",
                        record.org_id
                    ),
                );
                outcome
                    .rejected
                    .push(position, vec![error], || record.id.take());
                continue;
            }
            let mut reserved = Vec::new();
            match writer {
                Provenance::Collector => {}
                Provenance::Ingest { .. } => check_app_record(&record, &mut reserved),
                // The source's own writer is not vouched for: whatever provenance the input
                // carried is replaced below; only the ids this collector writes stay its own.
                Provenance::Imported { .. } => check_reserved_id(&record, &mut reserved),
            }
            if !reserved.is_empty() {
                outcome
                    .rejected
                    .push(position, reserved, || record.id.take());
                continue;
            }
            if let Some(cutoff) = expires_before
                && record.time < cutoff
            {
                let error = FieldError::new("time", expired_on_arrival(&record, cutoff));
                outcome.rejected.push_labelled(
                    EXPIRED_ON_ARRIVAL_LABEL,
                    position,
                    vec![error],
                    || record.id.take(),
                );
                continue;
            }
            if record.id.is_none() {
                record.id = Some(content_id(&record));
            }
            record.received_at = Some(now);
            record.provenance = Some(writer.clone());
            records.push(record);
            positions.push(position);
        }
        for (reason, count) in &outcome.rejected.by_reason {
            self.metrics
                .record_rejected(receiver.as_str(), reason, *count);
        }
        if records.is_empty() {
            return Ok(outcome);
        }
        if let Some(log) = &self.log {
            // Accepted = in the log on a quorum; duplicates here are only the resends the log's
            // window caught (the owner drops the others when it consumes them).
            let appended = log
                .append(&records)
                .await
                .map_err(|e| IngestError::Log(e.to_string()))?;
            outcome.accepted = appended.len() as u64;
            outcome.duplicates = appended
                .iter()
                .filter(|a| matches!(a, Appended::Duplicate))
                .count() as u64;
        } else {
            // The ids of what the store may refuse, which takes the records.
            let ids: Vec<String> = records.iter().map(|r| r.id().to_string()).collect();
            let admissions = self.store.submit(records).await.map_err(|e| match e {
                StoreError::Storage { source, .. } => IngestError::Unavailable(source.failure()),
                other => IngestError::Storage(other.to_string()),
            })?;
            let mut ids = ids.into_iter().map(Some).collect::<Vec<_>>();
            let mut id_conflicts = 0;
            let mut conflicting_ids = Vec::new();
            for (i, a) in admissions.iter().enumerate() {
                match a {
                    Admission::Stored { .. } => outcome.accepted += 1,
                    Admission::Duplicate => {
                        outcome.accepted += 1;
                        outcome.duplicates += 1;
                    }
                    // Listed after what was refused before the store; each names its line.
                    Admission::IdConflict => {
                        if conflicting_ids.len() < MAX_LISTED_REJECTIONS
                            && let Some(id) = &ids[i]
                        {
                            conflicting_ids.push(id.clone());
                        }
                        let error = FieldError::new("id", ID_CONFLICT);
                        outcome
                            .rejected
                            .push(positions[i], vec![error], || ids[i].take());
                        id_conflicts += 1;
                    }
                    // Only restored records are checked against the chain: not here.
                    Admission::ChainConflict => {
                        let error = FieldError::new("record", "does not continue its org's chain");
                        outcome
                            .rejected
                            .push(positions[i], vec![error], || ids[i].take());
                    }
                }
            }
            if id_conflicts > 0 {
                self.metrics
                    .record_rejected(receiver.as_str(), "id", id_conflicts);
                let entry = id_conflict_entry(key_org, &writer, &conflicting_ids, id_conflicts);
                self.record_id_conflicts(entry).await;
            }
        }
        self.metrics.record_accepted(
            receiver.as_str(),
            outcome.accepted - outcome.duplicates,
            outcome.duplicates,
        );
        Ok(outcome)
    }

    /// Writes the entry about a batch's id conflicts into the org's log. The batch's answer
    /// names them whatever becomes of the entry: one that cannot be written is logged.
    async fn record_id_conflicts(&self, entry: AuditRecord) {
        let org = entry.org_id.clone();
        let entry = codestax_common::record_from_value(
            serde_json::to_value(&entry).unwrap_or_default(),
            &self.collector_entry_rules(),
        );
        let written = match entry {
            // The collector's entries are never id conflicts: this does not come back here.
            Ok(entry) => Box::pin(self.submit(
                &org,
                Provenance::Collector,
                vec![Ok(entry)],
                Receiver::Internal,
            ))
            .await
            .map_err(|e| e.to_string())
            .and_then(|outcome| match outcome.rejected.listed().first() {
                None => Ok(()),
                Some(r) => Err(format!("{:?}", r.errors)),
            }),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = written {
            tracing::error!(
                org,
                error,
                "cannot record a batch's id conflicts in the org's log"
            );
        }
    }

    /// Makes one of the collector's own entries (provenance `collector`) durable in its org's
    /// log; an entry refused by the checks is an error naming why. Idempotent when the entry's
    /// id is derived from what it records.
    pub async fn submit_collector_entry(&self, record: AuditRecord) -> Result<(), EntryError> {
        let org = record.org_id.clone();
        let outcome = self
            .submit(
                &org,
                Provenance::Collector,
                vec![Ok(record)],
                Receiver::Internal,
            )
            .await?;
        match outcome.rejected.listed().first() {
            None => Ok(()),
            Some(r) => Err(EntryError::Refused(format!("{:?}", r.errors))),
        }
    }
}

/// Why a record whose id is stored for other content is refused: a resend must say the same.
pub const ID_CONFLICT: &str = "this id is already stored in this org for a record with other \
     content; not stored (a resend must be the same record; a new record needs a new id)";

/// The collector's `audit_log.id_conflict` entry: `writer` sent `count` records under ids that
/// are stored for other records (the first of them in `ids`), which were refused. The org's
/// own log then shows an attempt to write over its records, not only the sender's answer and
/// the operator's metrics. Its id comes from the writer and the ids, so a batch sent again
/// makes no second entry.
fn id_conflict_entry(org: &str, writer: &Provenance, ids: &[String], count: u64) -> AuditRecord {
    let mut digest = Sha256::new();
    digest.update(serde_json::to_vec(writer).unwrap_or_default());
    for id in ids {
        digest.update(b"\n");
        digest.update(id.as_bytes());
    }
    let mut metadata = Metadata::default();
    metadata.extra.insert("ids".into(), ids.into());
    metadata.extra.insert("records".into(), count.into());
    if let Provenance::Imported {
        source: Some(source),
        ..
    } = writer
    {
        metadata
            .extra
            .insert("source".into(), source.as_str().into());
    }
    AuditRecord {
        id: Some(format!(
            "{RESERVED_ID_PREFIX}conflict-{}",
            hex::encode(&digest.finalize()[..16])
        )),
        org_id: org.to_string(),
        time: codestax_common::time::truncate_to_micros(Utc::now()),
        actor: Actor {
            id: writer.key_id().unwrap_or("unknown").to_string(),
            name: None,
            email: None,
            kind: ActorKind::ApiKey,
        },
        action: "audit_log.id_conflict".into(),
        category: String::new(),
        target: Some(Target {
            kind: TargetKind::Organization,
            id: Some(org.to_string()),
            name: None,
        }),
        repository: None,
        outcome: Outcome::Failure,
        message: Some(format!(
            "{count} record(s) sent by {} key {} were refused: their ids are stored for other \
             records",
            writer.writer(),
            writer.key_id().unwrap_or("unknown"),
        )),
        metadata,
        schema_version: codestax_common::SCHEMA_VERSION,
        received_at: None,
        seq: None,
        prev_hash: None,
        provenance: None,
        hash: None,
    }
}

/// Why a record older than its org's retention (`cutoff`) is refused.
fn expired_on_arrival(record: &AuditRecord, cutoff: DateTime<Utc>) -> String {
    format!(
        "{EXPIRED_ON_ARRIVAL}: {} is older than the org's retention (records before {} are \
         deleted); not stored",
        codestax_common::time::format_rfc3339(&record.time),
        codestax_common::time::format_rfc3339(&cutoff),
    )
}

/// The id of a record that came without one: a hash of its content, so the same record sent twice
/// is stored once.
pub fn content_id(record: &AuditRecord) -> String {
    let mut r = record.clone();
    r.id = None;
    r.received_at = None;
    r.provenance = None;
    let digest = Sha256::digest(r.canonical_json().as_bytes());
    format!("sha256-{}", hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::reason_label;

    #[test]
    fn rejection_labels_are_top_level_fields_or_a_bounded_few() {
        assert_eq!(reason_label("actor.email"), "actor");
        assert_eq!(reason_label("metadata.changes[0].field"), "metadata");
        assert_eq!(reason_label("provenance"), "provenance");
        assert_eq!(reason_label("record"), "record");
        assert_eq!(reason_label("body"), "body");
        assert_eq!(reason_label("whatever.a.client.sent"), "unknown_field");
        assert_eq!(reason_label(""), "unknown_field");
    }
}
