//! The writers' merge policy: tantivy's log merge policy, with merges weighed against the room
//! the index's disk must keep free ([`MergeRoom`]).
//!
//! A merge writes its segments once more before they are deleted, so it needs free disk as large
//! as what it merges, for as long as it runs. When the WAL shares the disk, that room is the
//! WAL's to give: it refuses ingest while less than `wal.keep_free_bytes` plus its backlog's
//! room is free, so that the index can always commit what was acknowledged. A merge that took
//! that room would let the index fail with ENOSPC while the WAL still accepts: a merge whose
//! segments' bytes would take the disk below the room is left for a later commit instead (its
//! segments stay searchable as they are).

use super::options::MergeRoom;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tantivy::SegmentMeta;
use tantivy::indexer::{LogMergePolicy, MergeCandidate, MergePolicy};

/// A writer's merge policy for partition directory `dir`: merges from `min_segments` segments
/// of a size, each weighed against `room` when there is one.
pub(crate) fn policy(
    min_segments: usize,
    dir: &Path,
    room: Option<&MergeRoom>,
) -> Box<dyn MergePolicy> {
    let mut log = LogMergePolicy::default();
    log.set_min_num_segments(min_segments);
    match room {
        None => Box::new(log),
        Some(room) => Box::new(RoomyMerges {
            log,
            dir: dir.to_path_buf(),
            room: room.clone(),
        }),
    }
}

/// [`LogMergePolicy`]'s merges that fit in the free disk above the room.
#[derive(Debug)]
struct RoomyMerges {
    log: LogMergePolicy,
    dir: PathBuf,
    room: MergeRoom,
}

impl MergePolicy for RoomyMerges {
    fn compute_merge_candidates(&self, segments: &[SegmentMeta]) -> Vec<MergeCandidate> {
        let candidates = self.log.compute_merge_candidates(segments);
        if candidates.is_empty() {
            return candidates;
        }
        // Unknown free space: merge as tantivy would (a failed merge leaves its segments).
        let Some(free) = codestax_storage::free_bytes(&self.dir) else {
            return candidates;
        };
        let sizes = segment_bytes(&self.dir);
        let metas: HashMap<_, _> = segments.iter().map(|m| (m.id(), m)).collect();
        let bytes_of = |c: &MergeCandidate| -> u64 {
            c.0.iter()
                .filter_map(|id| metas.get(id))
                .map(|m| sizes.get(&m.id().uuid_string()).copied().unwrap_or(0))
                .sum()
        };
        fits(free, self.room.bytes(), candidates, bytes_of, |bytes| {
            tracing::debug!(
                dir = %self.dir.display(),
                bytes,
                free,
                "a merge waits: it would take the room kept free for indexing what was acknowledged"
            );
        })
    }
}

/// Whether a merge of every segment in partition directory `dir` fits in the free disk while
/// leaving `room` free (yes when the free space is unknown, as for the writers' merges).
pub(crate) fn whole_merge_fits(dir: &Path, room: Option<&MergeRoom>) -> bool {
    let Some(free) = codestax_storage::free_bytes(dir) else {
        return true;
    };
    let bytes: u64 = segment_bytes(dir).values().sum();
    left_after(free, bytes, room.map_or(0, MergeRoom::bytes)).is_some()
}

/// The bytes left free after a merge of `bytes` out of `free`, if that leaves `keep` free.
fn left_after(free: u64, bytes: u64, keep: u64) -> Option<u64> {
    free.checked_sub(bytes).filter(|left| *left >= keep)
}

/// The candidates, in order, that fit into `free` bytes while leaving `keep` free, each taking
/// its `bytes_of` from what is left; `skipped` is told the bytes of each one left out.
fn fits(
    mut free: u64,
    keep: u64,
    candidates: Vec<MergeCandidate>,
    bytes_of: impl Fn(&MergeCandidate) -> u64,
    mut skipped: impl FnMut(u64),
) -> Vec<MergeCandidate> {
    candidates
        .into_iter()
        .filter(|c| {
            let bytes = bytes_of(c);
            match left_after(free, bytes, keep) {
                Some(left) => {
                    free = left;
                    true
                }
                None => {
                    skipped(bytes);
                    false
                }
            }
        })
        .collect()
}

/// Bytes of each segment's files in `dir`, by segment id (tantivy names a segment's files
/// `<uuid>.<component>`).
fn segment_bytes(dir: &Path) -> HashMap<String, u64> {
    let mut sizes = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return sizes;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((segment, _)) = name.to_str().and_then(|n| n.split_once('.')) else {
            continue;
        };
        if let Ok(meta) = entry.metadata() {
            *sizes.entry(segment.to_string()).or_default() += meta.len();
        }
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::index::SegmentId;

    fn candidate(n: usize) -> MergeCandidate {
        MergeCandidate((0..n).map(|_| SegmentId::generate_random()).collect())
    }

    #[test]
    fn merges_that_would_take_the_room_wait() {
        let sized = |c: &MergeCandidate| 10 * c.0.len() as u64;
        let mut left_out = Vec::new();
        // 100 free, 50 kept: a merge of 30 fits, then one of 20 (50 left), not one of 10 more.
        let kept = fits(
            100,
            50,
            vec![candidate(3), candidate(2), candidate(1)],
            sized,
            |b| left_out.push(b),
        );
        assert_eq!(
            kept.iter().map(|c| c.0.len()).collect::<Vec<_>>(),
            vec![3, 2]
        );
        assert_eq!(left_out, vec![10]);
        // Larger than what is free: never.
        assert!(fits(20, 0, vec![candidate(3)], sized, |_| {}).is_empty());
        // Nothing kept: everything that fits.
        assert_eq!(
            fits(60, 0, vec![candidate(3), candidate(3)], sized, |_| {}).len(),
            2
        );
    }

    #[test]
    fn a_segments_bytes_are_its_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("abc.idx"), [0u8; 10]).unwrap();
        std::fs::write(dir.path().join("abc.7.del"), [0u8; 5]).unwrap();
        std::fs::write(dir.path().join("def.store"), [0u8; 3]).unwrap();
        std::fs::write(dir.path().join("meta.json"), [0u8; 100]).unwrap();
        std::fs::write(dir.path().join("lockfile"), [0u8; 1]).unwrap();
        let sizes = segment_bytes(dir.path());
        assert_eq!(sizes.get("abc"), Some(&15));
        assert_eq!(sizes.get("def"), Some(&3));
        assert_eq!(sizes.get("lockfile"), None);
    }
}
