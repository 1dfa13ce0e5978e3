//! For the collectors' unit tests: records indexed in memory with the real schema (as tantivy's
//! own collector tests use `Index::create_in_ram`), one segment per batch.

use crate::index::schema::{UidForm, build_schema, document, register_tokenizers};
use chrono::{DateTime, TimeZone, Utc};
use codestax_common::AuditRecord;
use serde_json::json;
use tantivy::{Index, IndexWriter, Searcher};

/// Hours after 2026-09-01 00:00 UTC, in microseconds.
pub fn hour(h: i64) -> i64 {
    start().timestamp_micros() + h * 3_600_000_000
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 9, 1, 0, 0, 0).unwrap()
}

/// A record at `time` (µs) with the given facet values; `seq` is its chain position.
pub struct Rec<'a> {
    pub org: &'a str,
    pub id: &'a str,
    pub time: i64,
    pub action: &'a str,
    pub user: &'a str,
    pub repository: Option<&'a str>,
    pub failed: bool,
    pub seq: Option<u64>,
}

impl Default for Rec<'_> {
    fn default() -> Self {
        Rec {
            org: "acme",
            id: "evt",
            time: hour(0),
            action: "scan.triggered",
            user: "ada@acme.example",
            repository: None,
            failed: false,
            seq: None,
        }
    }
}

impl Rec<'_> {
    fn record(&self) -> AuditRecord {
        let mut r: AuditRecord = serde_json::from_value(json!({
            "id": self.id,
            "org_id": self.org,
            "time": "2026-09-01T00:00:00Z",
            "actor": {"id": "u1", "email": self.user, "kind": "user"},
            "action": self.action,
            "repository": self.repository,
            "outcome": if self.failed { "failure" } else { "success" },
        }))
        .unwrap();
        r.time = Utc.timestamp_micros(self.time).unwrap();
        r.seq = self.seq;
        r
    }
}

/// A searcher over `segments`, each a batch of `(lsn, record)` committed as one segment.
pub fn searcher(segments: &[Vec<(u64, Rec)>]) -> Searcher {
    let (schema, fields) = build_schema();
    let index = Index::create_in_ram(schema);
    register_tokenizers(&index);
    let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
    writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
    for batch in segments {
        for (lsn, rec) in batch {
            writer
                .add_document(document(&fields, UidForm::Hash, *lsn, &rec.record(), None).unwrap())
                .unwrap();
        }
        writer.commit().unwrap();
    }
    let reader = index.reader().unwrap();
    let searcher = reader.searcher();
    assert_eq!(
        searcher.segment_readers().len(),
        segments.iter().filter(|s| !s.is_empty()).count()
    );
    searcher
}
