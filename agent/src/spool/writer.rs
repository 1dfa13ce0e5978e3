//! The spool's writer: every append waiting is written in one go and fsynced once (group
//! commit, [`codestax_storage::group`]), then each caller is answered and the new committed end
//! published.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use codestax_storage::{Committer, Frames, HEADER_LEN, Log, LogError};
use tokio::sync::oneshot;

use super::entry::SpoolEntry;
use super::segment;
use super::shared::{Shared, SpoolError, SpoolPos, WriteFailure};

/// Bytes the spool leaves free on its disk. Acknowledging writes files before it deletes
/// segments (the acknowledged position, the file checkpoints); were the spool to take the last
/// bytes of its disk itself, it could never free them. This also leaves room for a new segment
/// and for quarantine entries.
pub(crate) const KEEP_FREE_BYTES: u64 = 1 << 20;

pub(crate) struct Request {
    pub(crate) entries: Vec<SpoolEntry>,
    pub(crate) reply: oneshot::Sender<Result<SpoolPos, SpoolError>>,
}

pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) log: Log,
    pub(crate) frames: Frames,
    /// The last attempt to start a new segment failed.
    pub(crate) roll_failing: bool,
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
        let replies = |accepted: Vec<(_, u64)>| accepted.into_iter().map(|(reply, _)| reply);
        if let Some(free) = codestax_storage::free_bytes(&self.shared.dir)
            && free < written + KEEP_FREE_BYTES
        {
            let path = self.log.catalog().path(self.log.active_segment());
            let source = io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "{free} bytes free, {written} needed, {KEEP_FREE_BYTES} kept free for \
                     acknowledging what is spooled"
                ),
            );
            self.failed(LogError::Io { path, source }, replies(accepted));
            return;
        }
        // The log cuts a failed write back, so the segment ends on a whole entry.
        let result = self
            .log
            .append(&self.frames)
            .and_then(|at| self.log.sync().map(|()| at));
        let at = match result {
            Ok(at) => at,
            Err(e) => {
                self.failed(e, replies(accepted));
                return;
            }
        };
        self.succeeded();
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

    /// The group was not written (or a write or fsync failed and was cut back): nothing of it
    /// is in the spool. Each caller is told why (a full disk apart from other failures); the
    /// first failure of a run is logged as an error, the rest are counted in [`WriteFailure`]
    /// (the callers retry).
    fn failed(
        &mut self,
        e: LogError,
        replies: impl Iterator<Item = oneshot::Sender<Result<SpoolPos, SpoolError>>>,
    ) {
        let (path, kind) = match &e {
            LogError::Io { path, source } => (path.clone(), source.kind()),
            _ => (
                self.log.catalog().path(self.log.active_segment()),
                io::ErrorKind::Other,
            ),
        };
        let disk_full = codestax_storage::disk::is_full(kind);
        let message = e.to_string();
        {
            let mut failing = self.shared.failing.lock().expect("failing lock");
            match failing.as_mut() {
                Some(f) => {
                    f.failures += 1;
                    f.disk_full = disk_full;
                    f.message.clone_from(&message);
                }
                None => {
                    tracing::error!(
                        error = %e,
                        disk_full,
                        "spool write failed; intake pauses and retries until the spool can write again"
                    );
                    *failing = Some(WriteFailure {
                        disk_full,
                        message: message.clone(),
                        since: SystemTime::now(),
                        failures: 1,
                    });
                }
            }
        }
        for reply in replies {
            let (path, source) = (path.clone(), io::Error::new(kind, message.clone()));
            let _ = reply.send(Err(if disk_full {
                SpoolError::DiskFull { path, source }
            } else {
                SpoolError::Segment { path, source }
            }));
        }
    }

    /// An append succeeded: a run of failures, if any, is over. Called before the new
    /// committed end is published.
    fn succeeded(&mut self) {
        let ended = self.shared.failing.lock().expect("failing lock").take();
        if let Some(f) = ended {
            // What the failed writes left past the committed end is cut by now (at the latest
            // by the log before this write): readers drop what they may have buffered of it.
            self.shared.cuts.fetch_add(1, Ordering::AcqRel);
            tracing::warn!(
                failures = f.failures,
                failing_for = ?f.since.elapsed().unwrap_or_default(),
                "spool writes succeed again; intake resumes"
            );
        }
    }

    /// Seals the active segment and starts the next one.
    fn roll(&mut self) {
        match self.log.roll() {
            Ok(()) => {
                self.roll_failing = false;
                self.shared
                    .used_bytes
                    .fetch_add(HEADER_LEN, Ordering::AcqRel);
                self.shared.committed.send_replace(SpoolPos {
                    segment: self.log.active_segment(),
                    offset: HEADER_LEN,
                });
            }
            // Tried again after the next append; said once per run of failures.
            Err(e) if !self.roll_failing => {
                self.roll_failing = true;
                tracing::error!(
                    error = %e,
                    "cannot start a new spool segment; appending to the current one"
                );
            }
            Err(_) => {}
        }
    }
}
