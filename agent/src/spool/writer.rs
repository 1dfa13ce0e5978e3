//! The spool's writer thread: takes every append waiting, writes them in one go, fsyncs once
//! (group commit), then answers each caller and publishes the new committed end.

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};

use tokio::sync::oneshot;

use super::segment::{self, HEADER_LEN};
use super::{Shared, SpoolEntry, SpoolError, SpoolPos};

/// Appends waiting together are committed with one fsync, up to this many.
const MAX_GROUP: usize = 1024;

pub(crate) struct Request {
    pub(crate) entries: Vec<SpoolEntry>,
    pub(crate) reply: oneshot::Sender<Result<SpoolPos, SpoolError>>,
}

struct Writer {
    shared: Arc<Shared>,
    seq: u64,
    file: File,
    len: u64,
    buf: Vec<u8>,
}

pub(crate) fn start(
    shared: Arc<Shared>,
    seq: u64,
    file: File,
    len: u64,
) -> io::Result<mpsc::Sender<Request>> {
    let (tx, rx) = mpsc::channel();
    let writer = Writer {
        shared,
        seq,
        file,
        len,
        buf: Vec::new(),
    };
    std::thread::Builder::new()
        .name("spool-writer".into())
        .spawn(move || writer.run(rx))?;
    Ok(tx)
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(more) => group.push(more),
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
    }

    fn commit(&mut self, group: Vec<Request>) {
        let max = self.shared.options.max_bytes;
        let used = self.shared.used_bytes.load(Ordering::Acquire);
        self.buf.clear();
        let mut accepted = Vec::with_capacity(group.len());
        for request in group {
            let needed: u64 = request.entries.iter().map(segment::framed_len).sum();
            if needed + HEADER_LEN > max {
                let _ = request
                    .reply
                    .send(Err(SpoolError::TooLarge { needed, max }));
                continue;
            }
            let used_now = used + self.buf.len() as u64;
            if used_now + needed > max {
                let _ = request.reply.send(Err(SpoolError::Full {
                    used: used_now,
                    max,
                    needed,
                }));
                continue;
            }
            for entry in &request.entries {
                segment::encode_frame(entry, &mut self.buf);
            }
            accepted.push((request.reply, self.buf.len() as u64));
        }
        if accepted.is_empty() {
            return;
        }
        let written = self.buf.len() as u64;
        let result = self
            .file
            .write_all(&self.buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = result {
            let path = segment::segment_path(&self.shared.dir, self.seq);
            tracing::error!(path = %path.display(), error = %e, "spool write failed");
            // Take back whatever part was written, so the segment ends on a whole entry.
            if let Err(e) = self.file.set_len(self.len) {
                tracing::error!(path = %path.display(), error = %e, "cannot cut a failed spool write");
            }
            for (reply, _) in accepted {
                let _ = reply.send(Err(SpoolError::Segment {
                    path: path.clone(),
                    source: io::Error::new(e.kind(), e.to_string()),
                }));
            }
            return;
        }
        let start = self.len;
        self.len += written;
        self.shared
            .segments
            .lock()
            .expect("segments lock")
            .insert(self.seq, self.len);
        self.shared.used_bytes.fetch_add(written, Ordering::AcqRel);
        self.shared.committed.send_replace(SpoolPos {
            segment: self.seq,
            offset: self.len,
        });
        for (reply, end) in accepted {
            let _ = reply.send(Ok(SpoolPos {
                segment: self.seq,
                offset: start + end,
            }));
        }
        if self.len >= self.shared.options.segment_bytes {
            self.roll();
        }
    }

    /// Seals the active segment and starts the next one.
    fn roll(&mut self) {
        let next = self.seq + 1;
        match segment::create(&self.shared.dir, next) {
            Ok(file) => {
                self.shared
                    .segments
                    .lock()
                    .expect("segments lock")
                    .insert(next, HEADER_LEN);
                self.shared
                    .used_bytes
                    .fetch_add(HEADER_LEN, Ordering::AcqRel);
                self.seq = next;
                self.file = file;
                self.len = HEADER_LEN;
                self.shared.committed.send_replace(SpoolPos {
                    segment: next,
                    offset: HEADER_LEN,
                });
            }
            Err(e) => tracing::error!(
                path = %segment::segment_path(&self.shared.dir, next).display(),
                error = %e,
                "cannot start a new spool segment; appending to the current one"
            ),
        }
    }
}
