//! [`TimeChunks`]: the time range of each run of documents of a segment, so that a later page
//! of a walk visits only the runs around its cursor.

use super::filter::FastCol;
use std::collections::HashMap;
use std::sync::Arc;
use tantivy::SegmentReader;

/// The smallest and largest time of each run of a segment.
pub(super) type Runs = Arc<[(i64, i64)]>;

/// Segments whose runs [`TimeChunks`] keeps; beyond, it starts afresh.
const MAX_CHUNKED_SEGMENTS: usize = 10_000;

/// Per segment, the smallest and largest `time` of each run of `chunk_docs` documents (in
/// document order, deleted ones included). Records arrive roughly in time order, so a run spans
/// a short time and a later page of a walk visits only the runs around its cursor instead of
/// every match of the partition. Kept by segment id: a segment never changes.
pub(crate) struct TimeChunks {
    chunk_docs: u32,
    segments: std::sync::Mutex<HashMap<tantivy::index::SegmentId, Runs>>,
}

impl TimeChunks {
    /// Runs of `chunk_docs` documents (at least 1).
    pub fn new(chunk_docs: u32) -> TimeChunks {
        TimeChunks {
            chunk_docs: chunk_docs.max(1),
            segments: Default::default(),
        }
    }

    /// Documents per run: run `i` holds documents `i * chunk_docs ..`.
    pub(super) fn chunk_docs(&self) -> u32 {
        self.chunk_docs
    }

    /// The runs of a segment whose `time` column holds one value per document.
    pub(super) fn of(&self, reader: &SegmentReader, time: &FastCol<i64>) -> Option<Runs> {
        let values = time.full.as_ref()?;
        let id = reader.segment_id();
        if let Some(runs) = self
            .segments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Some(runs.clone());
        }
        let max_doc = reader.max_doc();
        let mut buf = vec![0i64; self.chunk_docs as usize];
        let mut runs = Vec::with_capacity(max_doc.div_ceil(self.chunk_docs) as usize);
        let mut start = 0;
        while start < max_doc {
            let len = self.chunk_docs.min(max_doc - start) as usize;
            values.get_range(u64::from(start), &mut buf[..len]);
            let (min, max) = buf[..len]
                .iter()
                .fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
            runs.push((min, max));
            start += self.chunk_docs;
        }
        let runs: Runs = runs.into();
        let mut segments = self.segments.lock().unwrap_or_else(|e| e.into_inner());
        if segments.len() >= MAX_CHUNKED_SEGMENTS {
            segments.clear();
        }
        segments.insert(id, runs.clone());
        Some(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::collect::test_index::{Rec, hour, searcher};
    use crate::index::schema::col;

    #[test]
    fn keeps_the_time_range_of_each_run_of_documents() {
        let times = [3, 1, 2, 9, 4];
        let s = searcher(&[times
            .iter()
            .enumerate()
            .map(|(i, &h)| {
                (
                    i as u64,
                    Rec {
                        time: hour(h),
                        ..Rec::default()
                    },
                )
            })
            .collect()]);
        let reader = s.segment_reader(0);
        let time = FastCol::new(reader.fast_fields().i64(col::TIME).unwrap());
        let chunks = TimeChunks::new(2);
        let runs = chunks.of(reader, &time).unwrap();
        assert_eq!(
            &runs[..],
            [(hour(1), hour(3)), (hour(2), hour(9)), (hour(4), hour(4))]
        );
        // Kept by segment id: asked again, the same runs.
        assert!(Arc::ptr_eq(&runs, &chunks.of(reader, &time).unwrap()));
        assert_eq!(TimeChunks::new(0).chunk_docs(), 1);
    }
}
