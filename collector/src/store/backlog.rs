//! [`Backlog`]: the WAL bytes the index has not committed yet, and the room on a shared disk that
//! indexing them needs.
//!
//! When the WAL and the index share a disk (`wal.keep_free_bytes` > 0), a fixed room is not
//! enough: the index's need grows with what it has not committed (its stage of past weeks, a
//! lagging indexer under load). Were the WAL to take the disk down to a fixed room while the
//! index is far behind, the index could never commit its backlog, so no WAL segment would ever
//! be deleted: acknowledged records would never become searchable. So an append also leaves
//! [`INDEX_BYTES_PER_WAL_BYTE`] times the backlog free ([`Backlog::room`]).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

/// A WAL entry's number (the WAL's `Lsn`; this file stays below the WAL).
type Lsn = u64;

/// Disk bytes the index may take to commit one byte of WAL: its own copy (the stored record,
/// terms, fast fields: 0.8 measured for the e2e test's records, docs/disk-full.md) and the merge
/// that writes it once more before the segments it merged are deleted.
pub const INDEX_BYTES_PER_WAL_BYTE: u64 = 2;

/// Backlog bytes are counted in chunks of about this many: the list stays short (one entry per
/// chunk, not per batch), and a chunk is forgotten once the index has all of it, so the backlog
/// is overstated by less than one chunk.
const CHUNK_BYTES: u64 = 256 << 10;

/// The WAL's entries the index has not committed, as chunks of consecutive LSNs.
#[derive(Debug, Default)]
pub struct Backlog {
    /// Oldest first.
    chunks: VecDeque<Chunk>,
    bytes: u64,
}

/// WAL entries with LSN `start..end`, `bytes` on disk.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    start: Lsn,
    end: Lsn,
    bytes: u64,
}

impl Backlog {
    /// Counts `bytes` of WAL entries with LSN `start..end` (entries come in LSN order).
    pub fn push(&mut self, start: Lsn, end: Lsn, bytes: u64) {
        self.bytes += bytes;
        match self.chunks.back_mut() {
            Some(last) if last.bytes < CHUNK_BYTES && last.end == start => {
                last.end = end;
                last.bytes += bytes;
            }
            _ => self.chunks.push_back(Chunk { start, end, bytes }),
        }
    }

    /// The WAL cut its entries from `lsn` on (a failed sync): they no longer need the index.
    /// A chunk that also holds entries before `lsn` is kept whole (an overstatement, never an
    /// understatement).
    pub fn cut_from(&mut self, lsn: Lsn) {
        while let Some(last) = self.chunks.back() {
            if last.start < lsn {
                return;
            }
            self.bytes -= last.bytes;
            self.chunks.pop_back();
        }
    }

    /// The index has committed every entry before `lsn`: forget the chunks it holds wholly.
    pub fn indexed_before(&mut self, lsn: Lsn) {
        while let Some(first) = self.chunks.front() {
            if first.end > lsn {
                return;
            }
            self.bytes -= first.bytes;
            self.chunks.pop_front();
        }
    }

    /// WAL bytes the index has not committed (at most one chunk too many).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The room an append must leave free on the WAL's disk, with `keep_free` bytes kept for
    /// the trees, state files and the index's small writes: that, plus what committing the
    /// backlog and `more` bytes takes. None when `keep_free` is 0 (the WAL has a disk of its
    /// own: the index's room is on another disk).
    pub fn room(&self, keep_free: u64, more: u64) -> u64 {
        if keep_free == 0 {
            return 0;
        }
        keep_free.saturating_add(
            self.bytes
                .saturating_add(more)
                .saturating_mul(INDEX_BYTES_PER_WAL_BYTE),
        )
    }
}

/// The backlog, whatever a thread that panicked holding it left (each change is one step, so
/// its counts stay consistent).
pub(crate) fn lock(backlog: &Mutex<Backlog>) -> MutexGuard<'_, Backlog> {
    backlog.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_forgotten_once_wholly_indexed() {
        let mut b = Backlog::default();
        // Batches of 100 KiB: LSNs 0..10, 10..20, ...; chunks close at 256 KiB.
        for i in 0..8u64 {
            b.push(i * 10, (i + 1) * 10, 100 << 10);
        }
        assert_eq!(b.bytes(), 800 << 10);
        // The first chunk is LSNs 0..30 (300 KiB): not forgotten until all of it is indexed.
        b.indexed_before(29);
        assert_eq!(b.bytes(), 800 << 10);
        b.indexed_before(30);
        assert_eq!(b.bytes(), 500 << 10);
        b.indexed_before(80);
        assert_eq!(b.bytes(), 0);
        b.push(80, 90, 1);
        assert_eq!(b.bytes(), 1);
    }

    #[test]
    fn a_cut_forgets_what_it_removed_and_never_more() {
        let mut b = Backlog::default();
        for i in 0..8u64 {
            b.push(i * 10, (i + 1) * 10, 100 << 10);
        }
        // Chunks: 0..30, 30..60, 60..80 (200 KiB, still open).
        b.cut_from(65);
        assert_eq!(b.bytes(), 800 << 10, "the last chunk holds LSNs below 65");
        b.cut_from(60);
        assert_eq!(b.bytes(), 600 << 10);
        b.cut_from(31);
        assert_eq!(b.bytes(), 600 << 10, "kept whole: LSNs 30..31 remain");
        b.cut_from(0);
        assert_eq!(b.bytes(), 0);
    }

    #[test]
    fn the_room_covers_the_backlog_only_on_a_shared_disk() {
        let mut b = Backlog::default();
        b.push(0, 10, 1000);
        assert_eq!(b.room(0, 500), 0);
        assert_eq!(b.room(4096, 500), 4096 + 1500 * INDEX_BYTES_PER_WAL_BYTE);
        assert_eq!(b.room(u64::MAX, 1), u64::MAX);
    }
}
