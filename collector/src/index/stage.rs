//! [`ColdStage`]: records of past (cold) partitions held in bounded memory, grouped by
//! partition, until the [`Indexer`](super::Indexer) hands them to a
//! [`Flight`](super::flight::Flight), which indexes each group in bulk with a writer it opens,
//! commits and closes at once. A spread batch then costs one writer per partition and
//! flush, not one writer switch (commit, close, open) per partition per batch.
//!
//! Only a record's canonical JSON is staged, not the typed record: the flight parses it back
//! (as a replay of the write-ahead log does). The typed record's heap is about twice its JSON, so
//! the same budget holds three times the records, and each flush writes segments three times
//! larger: fewer segments per week, less to merge (BENCHMARKS.md, session 13).

use super::scheme::PartitionKey;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Bytes a staged record is counted for beyond its JSON: its entry in the partition's list and
/// the allocator's rounding of the string.
const RECORD_OVERHEAD_BYTES: usize = 64;

/// One record waiting for its partition's flush.
pub(crate) struct StagedRecord {
    pub lsn: u64,
    /// The canonical JSON the index stores (the record is parsed back from it at the flush).
    pub stored: String,
}

/// The records staged for one partition, in LSN order.
pub(crate) struct Staged {
    pub key: PartitionKey,
    pub records: Vec<StagedRecord>,
    pub bytes: usize,
    /// When its first record was staged.
    pub since: Instant,
}

/// Staged records by partition start, with their total size.
#[derive(Default)]
pub(crate) struct ColdStage {
    parts: BTreeMap<i64, Staged>,
    bytes: usize,
}

impl ColdStage {
    /// Stages the record at `lsn` whose canonical JSON is `stored` for partition `key`.
    pub fn push(&mut self, key: &PartitionKey, lsn: u64, stored: String) {
        let bytes = stored.len() + RECORD_OVERHEAD_BYTES;
        let part = self.parts.entry(key.start).or_insert_with(|| Staged {
            key: key.clone(),
            records: Vec::new(),
            bytes: 0,
            since: Instant::now(),
        });
        part.records.push(StagedRecord { lsn, stored });
        part.bytes += bytes;
        self.bytes += bytes;
    }

    pub fn contains(&self, start: i64) -> bool {
        self.parts.contains_key(&start)
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Bytes staged, as counted.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Records staged.
    pub fn len(&self) -> usize {
        self.parts.values().map(|p| p.records.len()).sum()
    }

    /// The lowest LSN staged: `indexed_through` stays below it.
    pub fn min_lsn(&self) -> Option<u64> {
        self.parts
            .values()
            .filter_map(|p| p.records.first().map(|r| r.lsn))
            .min()
    }

    /// Takes the records of partition `start` out of the stage.
    pub fn take(&mut self, start: i64) -> Option<Staged> {
        let part = self.parts.remove(&start)?;
        self.bytes -= part.bytes;
        Some(part)
    }

    /// Whether the first record of some partition waited `max_wait` or longer.
    pub fn waited(&self, max_wait: Duration) -> bool {
        self.parts.values().any(|p| p.since.elapsed() >= max_wait)
    }

    /// The partition holding the most staged bytes, and those bytes.
    pub fn largest(&self) -> Option<(&PartitionKey, usize)> {
        self.parts
            .values()
            .max_by_key(|p| p.bytes)
            .map(|p| (&p.key, p.bytes))
    }

    /// Every partition staged.
    pub fn starts(&self) -> Vec<i64> {
        self.parts.keys().copied().collect()
    }

    /// Drops everything staged (after a failure: the write-ahead log has it).
    pub fn clear(&mut self) {
        self.parts.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::PartitionScheme;
    use chrono::{TimeZone, Utc};
    use codestax_common::AuditRecord;

    fn record(id: &str, day: u32) -> AuditRecord {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "org_id": "acme",
            "time": Utc.with_ymd_and_hms(2026, 9, day, 0, 0, 0).unwrap(),
            "actor": {"id": "u-1", "kind": "user"},
            "action": "scan.triggered",
        }))
        .unwrap()
    }

    #[test]
    fn counts_bytes_finds_the_lowest_lsn_and_what_waited() {
        let mut stage = ColdStage::default();
        assert_eq!(stage.min_lsn(), None);
        let scheme = PartitionScheme::Week;
        let mut json_bytes = 0;
        for (lsn, day) in [(7u64, 1u32), (3, 20), (9, 1)] {
            let r = record(&format!("r{lsn}"), day);
            let json = r.canonical_json();
            json_bytes += json.len();
            stage.push(&scheme.key_for(r.time), lsn, json);
        }
        assert_eq!(stage.len(), 3);
        assert_eq!(stage.min_lsn(), Some(3));
        let week1 = scheme.key_for(record("x", 1).time).start;
        let total = stage.bytes();
        // Counted as what it holds: the JSON and a fixed overhead, no typed record.
        assert_eq!(total, json_bytes + 3 * RECORD_OVERHEAD_BYTES);
        assert!(!stage.waited(Duration::from_secs(60)));
        assert!(stage.waited(Duration::ZERO));
        let taken = stage.take(week1).unwrap();
        assert_eq!(
            taken.records.iter().map(|r| r.lsn).collect::<Vec<_>>(),
            [7, 9]
        );
        assert_eq!(stage.min_lsn(), Some(3));
        assert_eq!(stage.bytes(), total - taken.bytes);
        stage.clear();
        assert!(stage.is_empty());
        assert_eq!(stage.bytes(), 0);
    }
}
