//! Grouping spooled records into requests: at most `max_records` records and `max_bytes`
//! bytes (encoded LogRecords), waiting at most `max_wait` after the first record for more.

use std::time::Duration;

use codestax_common::AuditRecord;
use codestax_common::otlp::to_log_record;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;
use tokio::time::Instant;

use crate::checkpoint::{CheckpointStore, FilePosition};
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

/// One record of a batch.
#[derive(Debug, Clone)]
pub struct Item {
    pub record: AuditRecord,
    pub log: LogRecord,
}

/// Records to send together, and the spool position that acknowledges them all.
#[derive(Debug, Default)]
pub struct Batch {
    pub items: Vec<Item>,
    pub bytes: usize,
    /// Everything before this position is covered by the batch.
    pub end: Option<SpoolPos>,
    /// Spool entries that could not be read as records (quarantined with the batch).
    pub unreadable: Vec<QuarantineEntry>,
}

/// Reads batches off the spool.
pub struct Batcher {
    state: Option<FillState>,
    checkpoints: CheckpointStore,
    metrics: std::sync::Arc<Metrics>,
}

struct FillState {
    reader: SpoolReader,
    /// A record read that did not fit in the previous batch.
    carry: Option<(Item, usize, SpoolPos)>,
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
            if batch.items.is_empty() {
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
    if let Some((item, size, end)) = state.carry.take() {
        batch.items.push(item);
        batch.bytes += size;
        batch.end = Some(end);
    }
    loop {
        if batch.items.len() >= limits.max_records {
            return Ok(true);
        }
        let Some(read) = state.reader.try_next()? else {
            return Ok(false);
        };
        match read.entry {
            SpoolEntry::FilePosition(p) => {
                state.positions.push(p);
                batch.end = Some(read.end);
            }
            SpoolEntry::Record(json) => match serde_json::from_slice::<AuditRecord>(&json) {
                Ok(record) => {
                    let log = to_log_record(&record);
                    let size = log.encoded_len() + 8;
                    let item = Item { record, log };
                    if !batch.items.is_empty() && batch.bytes + size > limits.max_bytes {
                        state.carry = Some((item, size, read.end));
                        return Ok(true);
                    }
                    batch.items.push(item);
                    batch.bytes += size;
                    batch.end = Some(read.end);
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
                }
            },
        }
    }
}
