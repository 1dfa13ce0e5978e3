//! The spool's writer: every append waiting is written in one go and fsynced once (group
//! commit, [`codestax_storage::group`]), then each caller is answered and the new committed end
//! published.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use codestax_storage::{Committer, Frames, HEADER_LEN, Log, LogError};
use tokio::sync::oneshot;

use super::entry::SpoolEntry;
use super::segment;
use super::shared::{Shared, SpoolError, SpoolPos};

pub(crate) struct Request {
    pub(crate) entries: Vec<SpoolEntry>,
    pub(crate) reply: oneshot::Sender<Result<SpoolPos, SpoolError>>,
}

pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) log: Log,
    pub(crate) frames: Frames,
}

impl Committer for Writer {
    type Request = Request;

    fn weight(_: &Request) -> (usize, usize) {
        (1, 0)
    }

    async fn commit(&mut self, group: Vec<Request>) {
        self.commit_group(group);
    }
}

impl Writer {
    fn commit_group(&mut self, group: Vec<Request>) {
        let max = self.shared.options.max_bytes;
        let used = self.shared.used_bytes.load(Ordering::Acquire);
        let checksum = self.log.checksum();
        self.frames.clear();
        let mut accepted = Vec::with_capacity(group.len());
        for request in group {
            let needed: u64 = request.entries.iter().map(segment::framed_len).sum();
            if needed + HEADER_LEN > max {
                let _ = request
                    .reply
                    .send(Err(SpoolError::TooLarge { needed, max }));
                continue;
            }
            let used_now = used + self.frames.len();
            if used_now + needed > max {
                let _ = request.reply.send(Err(SpoolError::Full {
                    used: used_now,
                    max,
                    needed,
                }));
                continue;
            }
            for entry in &request.entries {
                segment::push_frame(&mut self.frames, checksum, entry);
            }
            accepted.push((request.reply, self.frames.len()));
        }
        if accepted.is_empty() {
            return;
        }
        let written = self.frames.len();
        // The log cuts a failed write back, so the segment ends on a whole entry.
        let result = self
            .log
            .append(&self.frames)
            .and_then(|at| self.log.sync().map(|()| at));
        let at = match result {
            Ok(at) => at,
            Err(e) => {
                tracing::error!(error = %e, "spool write failed");
                let (path, kind) = match &e {
                    LogError::Io { path, source } => (path.clone(), source.kind()),
                    _ => (
                        self.log.catalog().path(self.log.active_segment()),
                        io::ErrorKind::Other,
                    ),
                };
                for (reply, _) in accepted {
                    let _ = reply.send(Err(SpoolError::Segment {
                        path: path.clone(),
                        source: io::Error::new(kind, e.to_string()),
                    }));
                }
                return;
            }
        };
        self.shared.used_bytes.fetch_add(written, Ordering::AcqRel);
        self.shared.committed.send_replace(SpoolPos {
            segment: at.segment,
            offset: self.log.active_len(),
        });
        for (reply, end) in accepted {
            let _ = reply.send(Ok(SpoolPos {
                segment: at.segment,
                offset: at.offset + end,
            }));
        }
        if self.log.active_len() >= self.shared.options.segment_bytes {
            self.roll();
        }
    }

    /// Seals the active segment and starts the next one.
    fn roll(&mut self) {
        match self.log.roll() {
            Ok(()) => {
                self.shared
                    .used_bytes
                    .fetch_add(HEADER_LEN, Ordering::AcqRel);
                self.shared.committed.send_replace(SpoolPos {
                    segment: self.log.active_segment(),
                    offset: HEADER_LEN,
                });
            }
            Err(e) => tracing::error!(
                error = %e,
                "cannot start a new spool segment; appending to the current one"
            ),
        }
    }
}
