//! Grouping spooled records into requests: at most `max_records` records and `max_bytes`
//! bytes (encoded LogRecords), waiting at most `max_wait` after the first record for more.

use std::ops::Range;
use std::time::Duration;

use codestax_common::AuditRecord;
use tokio::time::Instant;

use super::request::push_log_record;
use crate::checkpoint::{CheckpointStore, FilePosition};
use crate::encoded;
use crate::metrics::Metrics;
use crate::quarantine::{QuarantineEntry, QuarantineKind};
use crate::spool::{SpoolEntry, SpoolError, SpoolPos, SpoolReader};

/// When a batch is full.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_records: usize,
    pub max_bytes: usize,
    pub max_wait: Duration,
}

/// Records to send together, and the spool position that acknowledges them all.
#[derive(Debug, Default)]
pub struct Batch {
    /// The records, each as the `ScopeLogs.log_records` field holding its encoded LogRecord.
    pub records: Vec<u8>,
    /// Where each record's field is in `records`.
    pub spans: Vec<Range<usize>>,
    /// Everything before this position is covered by the batch.
    pub end: Option<SpoolPos>,
    /// Spool entries that could not be read as records (quarantined with the batch).
    pub unreadable: Vec<QuarantineEntry>,
}

impl Batch {
    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The `log_records` field of record `i`.
    pub fn field(&self, i: usize) -> &[u8] {
        &self.records[self.spans[i].clone()]
    }

    /// The encoded LogRecord of record `i` (its field without tag and length).
    pub fn log_record(&self, i: usize) -> &[u8] {
        let field = self.field(i);
        let mut rest = &field[1..];
        let _ = prost::encoding::decode_varint(&mut rest);
        rest
    }

    fn push(&mut self, log: &[u8]) {
        let start = self.records.len();
        push_log_record(&mut self.records, log);
        self.spans.push(start..self.records.len());
    }
}

/// Reads batches off the spool.
pub struct Batcher {
    state: Option<FillState>,
    checkpoints: CheckpointStore,
    metrics: std::sync::Arc<Metrics>,
}

struct FillState {
    reader: SpoolReader,
    /// A record (encoded LogRecord) read that did not fit in the previous batch.
    carry: Option<(Vec<u8>, SpoolPos)>,
    positions: Vec<FilePosition>,
}

impl Batcher {
    pub fn new(
        reader: SpoolReader,
        checkpoints: CheckpointStore,
        metrics: std::sync::Arc<Metrics>,
    ) -> Batcher {
        Batcher {
            state: Some(FillState {
                reader,
                carry: None,
                positions: Vec::new(),
            }),
            checkpoints,
            metrics,
        }
    }

    /// The next batch: full, or its oldest record waited `max_wait`, or (without records)
    /// only file positions to acknowledge. Waits while the spool is empty.
    pub async fn next(&mut self, limits: BatchLimits) -> Batch {
        let mut batch = Batch::default();
        let mut deadline: Option<Instant> = None;
        loop {
            let mut state = self.state.take().expect("batcher state");
            let (state_back, filled) = tokio::task::spawn_blocking(move || {
                let full = fill(&mut state, &mut batch, limits);
                (state, (batch, full))
            })
            .await
            .expect("batch fill does not panic");
            let (b, full) = filled;
            batch = b;
            self.state = Some(state_back);
            let state = self.state.as_mut().expect("just set");
            for p in state.positions.drain(..) {
                self.checkpoints.advance(p);
            }
            if let Err(e) = full {
                tracing::error!(error = %e, "damaged spool entry; skipping the rest of its segment");
                self.metrics.spool_damaged.inc();
                self.metrics.set_last_error(e.to_string());
                state.reader.skip_segment();
                continue;
            }
            if full.expect("checked") {
                return batch;
            }
            if batch.is_empty() {
                if batch.end.is_some() {
                    return batch; // only positions or unreadable entries: acknowledge them
                }
                state.reader.wait(Duration::from_secs(3600)).await;
                continue;
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + limits.max_wait);
            let now = Instant::now();
            if now >= deadline {
                return batch;
            }
            state.reader.wait(deadline - now).await;
        }
    }
}

/// Reads what is committed into the batch; `Ok(true)` when the batch is full.
fn fill(state: &mut FillState, batch: &mut Batch, limits: BatchLimits) -> Result<bool, SpoolError> {
    if let Some((log, end)) = state.carry.take() {
        batch.push(&log);
        batch.end = Some(end);
    }
    loop {
        if batch.len() >= limits.max_records {
            return Ok(true);
        }
        let Some(read) = state.reader.try_next()? else {
            return Ok(false);
        };
        let log = match read.entry {
            SpoolEntry::FilePosition(p) => {
                state.positions.push(p);
                batch.end = Some(read.end);
                continue;
            }
            SpoolEntry::Log(log) => log,
            // Left by an agent of spool format 1.
            SpoolEntry::Json(json) => match serde_json::from_slice::<AuditRecord>(&json) {
                Ok(record) => {
                    let mut log = Vec::new();
                    encoded::encode_record(&record, &mut log);
                    log
                }
                Err(e) => {
                    batch.unreadable.push(QuarantineEntry {
                        kind: QuarantineKind::Rejected,
                        source: "spool",
                        path: None,
                        offset: None,
                        reason: format!("spooled record does not read back: {e}"),
                        line_bytes: json.len() as u64,
                        line: json,
                    });
                    batch.end = Some(read.end);
                    continue;
                }
            },
        };
        // The field's tag and length: at most 6 bytes.
        if !batch.is_empty() && batch.records.len() + log.len() + 6 > limits.max_bytes {
            state.carry = Some((log, read.end));
            return Ok(true);
        }
        batch.push(&log);
        batch.end = Some(read.end);
    }
}
