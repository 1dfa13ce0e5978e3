//! Reading the spool in order from the acknowledged position, up to the fsynced end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::segment::{self, FrameReader, HEADER_LEN};
use super::{Shared, SpoolEntry, SpoolError, SpoolPos};

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
    frames: Option<(u64, FrameReader)>,
    committed: watch::Receiver<SpoolPos>,
}

impl SpoolReader {
    pub(crate) fn new(shared: Arc<Shared>, pos: SpoolPos) -> SpoolReader {
        let committed = shared.committed.subscribe();
        SpoolReader {
            shared,
            pos,
            frames: None,
            committed,
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
            let limit = if self.pos.segment >= committed.segment {
                committed.offset
            } else {
                let segments = self.shared.segments.lock().expect("segments lock");
                match segments.get(&self.pos.segment) {
                    Some(&len) => len,
                    None => {
                        // Deleted or moved aside: continue with the next segment that exists.
                        let next = segments.range(self.pos.segment..).next().map(|(&s, _)| s);
                        drop(segments);
                        match next {
                            Some(seq) => {
                                self.move_to(seq);
                                continue;
                            }
                            None => return Ok(None),
                        }
                    }
                }
            };
            if self.pos.offset < limit {
                return self.read_frame().map(Some);
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

    fn read_frame(&mut self) -> Result<ReadEntry, SpoolError> {
        // Named only when opened or in an error (not formatted for every entry).
        let (shared, seq) = (self.shared.clone(), self.pos.segment);
        let path = || segment::segment_path(&shared.dir, seq);
        let stale = !matches!(&self.frames, Some((seq, r)) if *seq == self.pos.segment && r.offset() == self.pos.offset);
        if stale {
            let path = path();
            let reader = FrameReader::open(&path, self.pos.offset).map_err(|source| {
                SpoolError::Segment {
                    path: path.clone(),
                    source,
                }
            })?;
            self.frames = Some((self.pos.segment, reader));
        }
        let (_, reader) = self.frames.as_mut().expect("opened above");
        match reader.next() {
            Ok(Some(Ok(entry))) => {
                self.pos.offset = reader.offset();
                Ok(ReadEntry {
                    entry,
                    end: self.pos,
                })
            }
            Ok(Some(Err(problem))) => {
                let offset = self.pos.offset;
                self.frames = None;
                Err(SpoolError::Damaged {
                    path: path(),
                    offset,
                    problem: problem.to_string(),
                })
            }
            Ok(None) => {
                self.frames = None;
                Err(SpoolError::Damaged {
                    path: path(),
                    offset: self.pos.offset,
                    problem: "the segment ends before its committed length".into(),
                })
            }
            Err(source) => {
                self.frames = None;
                Err(SpoolError::Segment {
                    path: path(),
                    source,
                })
            }
        }
    }

    /// Skips the rest of a damaged segment (after the caller has logged the damage).
    pub fn skip_segment(&mut self) {
        self.move_to(self.pos.segment + 1);
    }
}
