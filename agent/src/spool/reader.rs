//! Reading the spool in order from the acknowledged position, up to the fsynced end.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use codestax_storage::{Frame, HEADER_LEN, SegmentReader};

use super::entry::SpoolEntry;
use super::segment::FORMAT;
use super::shared::{Shared, SpoolError, SpoolPos};

/// An entry read from the spool, with the position just after it (what to acknowledge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    pub entry: SpoolEntry,
    pub end: SpoolPos,
}

/// Reads committed entries in order. Independent of acknowledgement: the forwarder reads ahead
/// and acknowledges what the collector has taken.
pub struct SpoolReader {
    shared: Arc<Shared>,
    pos: SpoolPos,
    frames: Option<(u64, SegmentReader)>,
    committed: watch::Receiver<SpoolPos>,
    /// [`Shared::cuts`] when `frames` was last trusted.
    cuts: u64,
}

impl SpoolReader {
    pub(crate) fn new(shared: Arc<Shared>, pos: SpoolPos) -> SpoolReader {
        let committed = shared.committed.subscribe();
        let cuts = shared.cuts.load(Ordering::Acquire);
        SpoolReader {
            shared,
            pos,
            frames: None,
            committed,
            cuts,
        }
    }

    /// Where the next entry will be read from.
    pub fn position(&self) -> SpoolPos {
        self.pos
    }

    /// The next committed entry, or `None` when everything committed has been read.
    /// Blocking file I/O: call it off the async runtime's worker threads for long reads.
    pub fn try_next(&mut self) -> Result<Option<ReadEntry>, SpoolError> {
        loop {
            let committed = *self.committed.borrow_and_update();
            // Loaded after the committed end: an end published past failed writes comes with a
            // bump seen here. The segment reader may have buffered bytes of those writes (read
            // while they were in the file, before they were cut); what was written in their place
            // since must be read from the file.
            let cuts = self.shared.cuts.load(Ordering::Acquire);
            if cuts != self.cuts {
                self.cuts = cuts;
                self.frames = None;
            }
            let limit = if self.pos.segment >= committed.segment {
                committed.offset
            } else {
                let catalog = &self.shared.catalog;
                match catalog.get(self.pos.segment) {
                    Some(state) => state.len,
                    // Deleted or moved aside: continue with the next segment that exists.
                    None => match catalog.next_from(self.pos.segment) {
                        Some((seq, _)) => {
                            self.move_to(seq);
                            continue;
                        }
                        None => return Ok(None),
                    },
                }
            };
            if self.pos.offset < limit {
                return self.read_frame(limit).map(Some);
            }
            if self.pos.segment < committed.segment {
                self.move_to(self.pos.segment + 1);
                continue;
            }
            return Ok(None);
        }
    }

    /// Waits until more is committed or `timeout` passes; true if more may be there.
    pub async fn wait(&mut self, timeout: Duration) -> bool {
        if *self.committed.borrow_and_update() != self.pos {
            return true;
        }
        matches!(
            tokio::time::timeout(timeout, self.committed.changed()).await,
            Ok(Ok(()))
        )
    }

    fn move_to(&mut self, seq: u64) {
        self.pos = SpoolPos {
            segment: seq,
            offset: HEADER_LEN,
        };
        self.frames = None;
    }

    fn read_frame(&mut self, limit: u64) -> Result<ReadEntry, SpoolError> {
        // Named only when opened or in an error (not formatted for every entry).
        let (shared, seq) = (self.shared.clone(), self.pos.segment);
        let path = || shared.catalog.path(seq);
        let damaged = |offset, problem: String| SpoolError::Damaged {
            path: path(),
            offset,
            problem,
        };
        let stale = !matches!(&self.frames, Some((seq, r)) if *seq == self.pos.segment && r.offset() == self.pos.offset);
        if stale {
            let opened = SegmentReader::open(&FORMAT, &shared.dir, seq, self.pos.offset).map_err(
                |source| SpoolError::Segment {
                    path: path(),
                    source,
                },
            )?;
            self.frames = Some((seq, opened.map_err(|why| damaged(0, why))?));
        }
        let (_, reader) = self.frames.as_mut().expect("opened above");
        let offset = self.pos.offset;
        let problem = match reader.next(limit) {
            Ok(Frame::Entry(payload)) => match SpoolEntry::from_payload(payload) {
                Some(entry) => {
                    self.pos.offset = reader.offset();
                    return Ok(ReadEntry {
                        entry,
                        end: self.pos,
                    });
                }
                None => "unknown entry kind".to_owned(),
            },
            Ok(Frame::Bad(problem)) => problem.to_string(),
            Ok(Frame::End) => "the segment ends before its committed length".to_owned(),
            Err(source) => {
                self.frames = None;
                return Err(SpoolError::Segment {
                    path: path(),
                    source,
                });
            }
        };
        self.frames = None;
        Err(damaged(offset, problem))
    }

    /// Skips the rest of a damaged segment (after the caller has logged the damage).
    pub fn skip_segment(&mut self) {
        self.move_to(self.pos.segment + 1);
    }
}
