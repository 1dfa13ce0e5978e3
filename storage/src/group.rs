//! Group commit: many callers' appends made durable with one write and one fsync.
//!
//! One model for every log: a dedicated writer thread runs a current-thread Tokio runtime and
//! takes requests from an unbounded Tokio channel. The thread keeps blocking file I/O off the
//! async runtimes; the channel serves both async callers (who await the reply) and plain threads
//! (who send without waiting and block on the reply); the runtime gives the writer a timer (to
//! wait briefly for more callers) and lets a commit await downstream back-pressure. An optional
//! bound on queued requests makes async senders wait for room, as a bounded channel would.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

/// The writer has stopped: every request sent after is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the writer has stopped")]
pub struct Stopped;

/// What the writer thread does with a group.
pub trait Committer: Send + 'static {
    type Request: Send + 'static;

    /// How many records and bytes a request adds to a group (for the group caps).
    fn weight(request: &Self::Request) -> (usize, usize);

    /// Called before each group is gathered (housekeeping between groups).
    fn before_group(&mut self) {}

    /// Makes the group durable and answers its requests.
    fn commit(&mut self, group: Vec<Self::Request>) -> impl Future<Output = ()>;
}

/// How groups are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupOptions {
    /// How long to wait for more requests to join a group while other senders are known to be
    /// on their way. Zero never waits; a lone sender is never delayed.
    pub max_wait: Duration,
    /// A group takes at most this many requests...
    pub max_requests: usize,
    /// ...and stops taking more once it holds this many records...
    pub max_records: usize,
    /// ...or this many bytes.
    pub max_bytes: usize,
    /// Requests that may wait for the writer before [`GroupCommit::send_when_room`] waits;
    /// `None` for no bound.
    pub queue_depth: Option<usize>,
}

struct Queued<R> {
    request: R,
    _room: Option<OwnedSemaphorePermit>,
}

/// The sending side of a writer thread; clones share it. The thread stops once every clone is
/// dropped and the queued requests are committed.
pub struct GroupCommit<R> {
    tx: mpsc::UnboundedSender<Queued<R>>,
    /// Requests sent (or being sent) and not yet committed.
    inflight: Arc<AtomicUsize>,
    room: Option<Arc<Semaphore>>,
    stopped: watch::Receiver<bool>,
}

impl<R> Clone for GroupCommit<R> {
    fn clone(&self) -> Self {
        GroupCommit {
            tx: self.tx.clone(),
            inflight: self.inflight.clone(),
            room: self.room.clone(),
            stopped: self.stopped.clone(),
        }
    }
}

impl<R> std::fmt::Debug for GroupCommit<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("inflight", &self.inflight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Undoes a sender's `inflight` increment unless the request was queued.
struct InflightGuard<'a>(Option<&'a AtomicUsize>);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.0 {
            n.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl<R: Send + 'static> GroupCommit<R> {
    /// Starts the writer thread `name` running `committer`.
    pub fn start<C: Committer<Request = R>>(
        name: &str,
        committer: C,
        options: GroupOptions,
    ) -> io::Result<GroupCommit<R>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stopped_tx, stopped) = watch::channel(false);
        let inflight = Arc::new(AtomicUsize::new(0));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let writer = Writer {
            rx,
            committer,
            options,
            inflight: inflight.clone(),
        };
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // Dropped last, after the committer (and whatever it holds), even on a panic.
                let stopped_tx = stopped_tx;
                runtime.block_on(writer.run());
                stopped_tx.send_replace(true);
            })?;
        Ok(GroupCommit {
            tx,
            inflight,
            room: options.queue_depth.map(|n| Arc::new(Semaphore::new(n))),
            stopped,
        })
    }

    /// Queues `request` without waiting (from any thread, in or out of a runtime).
    pub fn send(&self, request: R) -> Result<(), Stopped> {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        let mut guard = InflightGuard(Some(&self.inflight));
        self.tx
            .send(Queued {
                request,
                _room: None,
            })
            .map_err(|_| Stopped)?;
        guard.0 = None;
        Ok(())
    }

    /// Queues `request`, first waiting for room when the queue is bounded (back-pressure).
    pub async fn send_when_room(&self, request: R) -> Result<(), Stopped> {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        let mut guard = InflightGuard(Some(&self.inflight));
        let room = match &self.room {
            Some(room) => Some(room.clone().acquire_owned().await.map_err(|_| Stopped)?),
            None => None,
        };
        self.tx
            .send(Queued {
                request,
                _room: room,
            })
            .map_err(|_| Stopped)?;
        guard.0 = None; // the writer decrements once committed
        Ok(())
    }

    /// Drops this handle and waits until the writer thread has stopped, which happens once
    /// every clone is dropped and the queued requests are committed.
    pub async fn close(self) {
        let GroupCommit {
            tx, mut stopped, ..
        } = self;
        drop(tx);
        // An error means the thread ended without saying so (a panic): stopped too.
        let _ = stopped.wait_for(|s| *s).await;
    }
}

struct Writer<C: Committer> {
    rx: mpsc::UnboundedReceiver<Queued<C::Request>>,
    committer: C,
    options: GroupOptions,
    inflight: Arc<AtomicUsize>,
}

impl<C: Committer> Writer<C> {
    async fn run(mut self) {
        while let Some(first) = self.rx.recv().await {
            self.committer.before_group();
            let group = self.gather(first.request).await;
            let n = group.len();
            self.committer.commit(group).await;
            self.inflight.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Takes `first` and whatever else is queued, up to the caps; when the queue is empty but
    /// more senders are on their way, waits up to `max_wait` for them.
    async fn gather(&mut self, first: C::Request) -> Vec<C::Request> {
        let o = self.options;
        let deadline = tokio::time::Instant::now() + o.max_wait;
        let (mut records, mut bytes) = C::weight(&first);
        let mut group = vec![first];
        while group.len() < o.max_requests && records < o.max_records && bytes < o.max_bytes {
            let next = match self.rx.try_recv() {
                Ok(q) => q,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    let others = self.inflight.load(Ordering::Acquire) > group.len();
                    if !others || o.max_wait.is_zero() {
                        break;
                    }
                    match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                        Ok(Some(q)) => q,
                        Ok(None) | Err(_) => break,
                    }
                }
            };
            let (r, b) = C::weight(&next.request);
            records += r;
            bytes += b;
            group.push(next.request);
        }
        group
    }
}
