//! Shard owners (docs/cluster.md, phase 2): for every shard this node holds a lease on, a task
//! reads the shard's durable pull consumer `owner-<shard>` in stream order and feeds each record,
//! as the ingesting node stamped it, to the local [`Store`] — the single node's dedupe on
//! (org, id), per-org seq and hash chain, index and Merkle trees. A message is acknowledged to
//! JetStream only once the index has committed everything stored before it, so a crash
//! redelivers what the index may lack and the store drops what it has: exactly once in the index.
//! The task keeps fetching and storing while up to [`MAX_PENDING_BATCHES`] stored batches wait
//! for their commit, each acknowledged in stream order as the index commits it, and all of them
//! before a snapshot, before the shard's reads are first served, and when the shard goes idle.
//!
//! Snapshots (phase 3): on taking a shard, the task first restores the shard's latest snapshot
//! from the object store ([`Store::restore`]: the previous owners' sealed records, chains
//! included) and reads the stream from the message after it, through a consumer of its own
//! epoch; every `snapshot_interval` it uploads the records its orgs gained since the last
//! snapshot and publishes the new manifest in the metastore, fenced by its epoch. So the chains
//! of a shard continue on whichever node owns it next.
//!
//! Retention: the janitor deletes what has expired from the local index, and records it in the
//! chain checkpoints first. A snapshot carries its orgs' checkpoints and leaves out what they
//! deleted; a restore takes them in ([`ChainCheckpoints::adopt`]) before it restores the records
//! after them, so each org's chain continues from its retained tail on the next owner.
//!
//! Reads: a shard's reads are answered here only once its task restored the snapshot and caught
//! up with the stream under its epoch ([`Serving`]); until then they answer 503.
//!
//! Fencing: a shard's task stops as soon as the lease keeper no longer lists its lease (lost,
//! released, or taken again under a new epoch), and checks the lease's local deadline before
//! every write and every ack, so it never acts for a lease that may have passed on; a snapshot
//! the metastore refuses as fenced stops it too.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Message};
use codestax_common::AuditRecord;
use futures_util::FutureExt as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::error::{MetastoreError, SnapshotError};
use super::jetstream::{JetStreamLog, OWNER_MAX_ACK_PENDING, OwnerAcks, owner_fetch};
use super::leases::Held;
use super::metastore::{Lease, MetastoreLink};
use super::snapshot::{CHUNK_RECORDS, KEEP_MANIFESTS, Manifest, SnapshotStore, retained_runs};
use crate::index::AuditIndex;
use crate::metrics::Metrics;
use crate::retention::{ChainCheckpoints, RetentionPolicy};
use crate::store::{Admission, Lsn, Store, StoreError};

/// Messages taken from a shard's consumer at a time: one store submission, one ack round.
const BATCH_MESSAGES: usize = 1000;
/// Stored batches of a shard that wait for their index commit at once while the owner fetches
/// and stores the next ones: one batch at a time held a shard at ~3,000 records/s, a fetch, a
/// store write and a commit interval (350 ms) per 1,000 records (docs/cluster.md, "Sizing").
const MAX_PENDING_BATCHES: usize = 16;
// The consumer must hand out everything the pipeline may hold unacknowledged.
const _: () = assert!(((MAX_PENDING_BATCHES * BATCH_MESSAGES) as i64) < OWNER_MAX_ACK_PENDING);
/// How long a fetch waits for messages when the shard is idle.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// How long an idle owner waits for its consumer's delivery count before it serves without it
/// (an election can hold JetStream requests for seconds).
const COUNT_WAIT: Duration = Duration::from_millis(500);
/// Pause before trying again after NATS or the store refused.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Longest pause between restores of a shard that keep failing (a fork persists: each try
/// downloads the chunks again).
const RESTORE_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// The owner deletes what no recent manifest names every this many snapshots it publishes.
const COLLECT_EVERY: u64 = 10;
/// What it deletes must be older than this many snapshot intervals (and [`COLLECT_GRACE_MIN`]):
/// longer than a restore or a snapshot in progress takes (docs/cluster.md, "Snapshot upkeep").
const COLLECT_GRACE_INTERVALS: u32 = 10;
const COLLECT_GRACE_MIN: Duration = Duration::from_secs(600);
/// The receiver label of the owners' counters (`records_accepted`, `records_deduplicated`,
/// `records_rejected`).
pub const OWNER_RECEIVER: &str = "owner";

/// What every shard task of a node shares.
struct Shared {
    log: JetStreamLog,
    store: Store,
    index: AuditIndex,
    metrics: Arc<Metrics>,
    snapshots: SnapshotSettings,
    /// Whose chain checkpoints snapshots carry and restores take in.
    retention: Arc<RetentionPolicy>,
    serving: Serving,
}

/// Where and how often the owners snapshot their shards.
pub struct SnapshotSettings {
    pub store: SnapshotStore,
    pub metastore: MetastoreLink,
    pub interval: Duration,
}

/// The owners of one node: one task per held shard.
pub struct Owners {
    shared: Arc<Shared>,
}

/// The shards whose reads this node answers: its owner task restored the shard's snapshot and
/// caught up with the stream under the epoch given. Between taking a lease and that point a read
/// answers 503, never from an index still missing the shard's records. Cheap to clone.
#[derive(Clone, Default)]
pub struct Serving {
    shards: Arc<RwLock<BTreeMap<u32, i64>>>,
}

impl Serving {
    /// Whether `shard`'s reads are answered here under `epoch`.
    pub fn is_serving(&self, shard: u32, epoch: i64) -> bool {
        self.read().get(&shard) == Some(&epoch)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u32, i64>> {
        self.shards.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u32, i64>> {
        self.shards.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn start(&self, shard: u32, epoch: i64) {
        self.write().insert(shard, epoch);
    }

    #[cfg(test)]
    pub(crate) fn mark_for_tests(&self, shard: u32, epoch: i64) {
        self.start(shard, epoch);
    }

    fn stop(&self, shard: u32, epoch: i64) {
        let mut shards = self.write();
        if shards.get(&shard) == Some(&epoch) {
            shards.remove(&shard);
        }
    }
}

/// Ends a shard task's serving however the task returns.
struct ServingGuard<'a> {
    serving: &'a Serving,
    shard: u32,
    epoch: i64,
    marked: bool,
}

impl ServingGuard<'_> {
    /// The shard caught up: reads are answered here from now on.
    fn caught_up(&mut self) {
        if !self.marked {
            self.marked = true;
            self.serving.start(self.shard, self.epoch);
            tracing::info!(
                shard = self.shard,
                epoch = self.epoch,
                "shard caught up with the stream; serving its reads"
            );
        }
    }
}

impl Drop for ServingGuard<'_> {
    fn drop(&mut self) {
        if self.marked {
            self.serving.stop(self.shard, self.epoch);
        }
    }
}

/// A running shard task and the epoch it acts under.
struct Running {
    epoch: i64,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Owners {
    pub fn new(
        log: JetStreamLog,
        store: Store,
        index: AuditIndex,
        metrics: Arc<Metrics>,
        snapshots: SnapshotSettings,
        retention: Arc<RetentionPolicy>,
        serving: Serving,
    ) -> Owners {
        Owners {
            shared: Arc::new(Shared {
                log,
                store,
                index,
                metrics,
                snapshots,
                retention,
                serving,
            }),
        }
    }

    /// Follows `held` until `stop` (or until the keeper is gone): starts a shard's task when its
    /// lease appears, stops it when the lease goes or its epoch changes, and starts it again if
    /// it ended by itself under a lease still held (`supervise`). Returns once every task has
    /// stopped (they hold the store).
    pub async fn run(self, held: watch::Receiver<Held>, stop: CancellationToken) {
        let shared = self.shared;
        supervise(held, stop, move |shard, epoch, held, stopped| {
            let shared = shared.clone();
            async move {
                own_shard(shared.clone(), shard, epoch, held, stopped).await;
                shared.metrics.forget_shard(shard);
            }
        })
        .await;
    }
}

/// Runs `own(shard, epoch, held, stop)` for every lease in `held` while it is listed under that
/// epoch. An owner also ends by itself: when its lease's local deadline passes while the keeper
/// cannot renew it (a slow or failing metastore round), or when a write is fenced. If the keeper
/// then renews the lease under the same epoch, nothing in `held` says "new": the owner is
/// started again here, once the lease is valid and [`RETRY_AFTER`] after it ended (so an owner
/// that cannot run does not spin). Without this the shard went unserved on this node for as
/// long as that epoch lasted.
async fn supervise<F, Fut>(mut held: watch::Receiver<Held>, stop: CancellationToken, own: F)
where
    F: Fn(u32, i64, watch::Receiver<Held>, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let ended = Arc::new(tokio::sync::Notify::new());
    let mut running: BTreeMap<u32, Running> = BTreeMap::new();
    loop {
        let now = held.borrow_and_update().clone();
        running.retain(|shard, r| {
            if now.get(shard).is_none_or(|l| l.epoch != r.epoch) {
                tracing::info!(shard, epoch = r.epoch, "shard lease gone; its owner stops");
                r.stop.cancel();
                return false;
            }
            if r.task.is_finished() {
                tracing::warn!(
                    shard,
                    epoch = r.epoch,
                    "the shard's owner ended under a lease still held; it starts again while the lease is valid"
                );
                return false;
            }
            true
        });
        for (shard, lease) in &now {
            if running.contains_key(shard) || !lease.is_valid() {
                continue;
            }
            tracing::info!(shard, epoch = lease.epoch, "owning the shard");
            let token = stop.child_token();
            let owner = own(*shard, lease.epoch, held.clone(), token.clone());
            let (stopped, ended) = (token.clone(), ended.clone());
            let task = tokio::spawn(async move {
                owner.await;
                if !stopped.is_cancelled() {
                    pause(&stopped).await;
                }
                ended.notify_one();
            });
            running.insert(
                *shard,
                Running {
                    epoch: lease.epoch,
                    stop: token,
                    task,
                },
            );
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = held.changed() => if changed.is_err() { break },
            _ = ended.notified() => {}
        }
    }
    for r in running.values() {
        r.stop.cancel();
    }
    for (shard, r) in running {
        if let Err(e) = r.task.await {
            tracing::error!(shard, error = %e, "a shard owner task failed");
        }
    }
}

/// Whether this node may still act for `shard` under `epoch`: the keeper lists that lease and
/// its local deadline has not passed.
fn may_act(held: &watch::Receiver<Held>, shard: u32, epoch: i64) -> bool {
    held.borrow()
        .get(&shard)
        .is_some_and(|l| l.epoch == epoch && l.is_valid())
}

/// Waits [`RETRY_AFTER`]; false if `stop` came first.
async fn pause(stop: &CancellationToken) -> bool {
    pause_for(stop, RETRY_AFTER).await
}

/// Waits `wait`; false if `stop` came first.
async fn pause_for(stop: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// Restores `shard`'s latest snapshot, then consumes it under `epoch` from the message after
/// the snapshot, snapshotting every interval, until `stop` or until the lease is no longer valid.
async fn own_shard(
    shared: Arc<Shared>,
    shard: u32,
    epoch: i64,
    held: watch::Receiver<Held>,
    stop: CancellationToken,
) {
    let mut step = Step {
        shared: &shared,
        shard,
        epoch,
        held: &held,
        stop: &stop,
        acks: OwnerAcks::Cumulative,
    };
    let mut backoff = RETRY_AFTER;
    let mut snapshot = loop {
        if step.may_act().is_err() {
            return;
        }
        match step.restore().await {
            Ok(Some(manifest)) => break manifest,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(shard, epoch, error = %e, retry_in = backoff.as_secs(), "cannot restore the shard's snapshot; trying again");
                if !pause_for(&stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(RESTORE_BACKOFF_MAX);
            }
        }
    };
    let mut consumer = loop {
        if step.may_act().is_err() {
            return;
        }
        match shared
            .log
            .owner_consumer(shard, epoch, snapshot.stream_seq + 1)
            .await
        {
            Ok((c, acks)) => {
                step.acks = acks;
                break c;
            }
            Err(e) => {
                tracing::warn!(shard, error = %e, "cannot open the shard's consumer; trying again");
                if !pause(&stop).await {
                    return;
                }
            }
        }
    };
    let mut consumed = Consumed {
        through: snapshot.stream_seq,
        orgs: BTreeSet::new(),
    };
    let mut unacked = Unacked::default();
    // The consumer sequence of the next delivery: a cumulative ack must not pass one that
    // never arrived (a fetch that expired as the server sent it), which only an ack wait
    // would bring again.
    let mut next_delivery = consumer.cached_info().delivered.consumer_sequence + 1;
    // The last idle fetch made the consumer again for deliveries lost at the stream's end, and
    // nothing has arrived since.
    let mut reset_at_end = false;
    // The snapshot being taken and published: off this loop, so a slow object store holds up
    // neither consumption nor reads.
    let mut publishing: Option<Publishing> = None;
    let mut snapshot_at = Instant::now();
    let mut published = 0u64;
    let mut serving = ServingGuard {
        serving: &shared.serving,
        shard,
        epoch,
        marked: false,
    };
    while step.may_act().is_ok() {
        // A full pipeline fetches nothing more until its oldest batch is indexed and acked.
        while unacked.is_full() {
            if step.ack_oldest(&mut unacked, &mut consumed).await.is_err() {
                return;
            }
        }
        // The fetch (up to FETCH_WAIT when the shard is idle) goes on while stored batches are
        // acknowledged as the index commits them.
        let fetched = {
            let next = fetch(&consumer);
            tokio::pin!(next);
            loop {
                let oldest = unacked.oldest_lsn();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    fetched = &mut next => break fetched,
                    indexed = step.wait_indexed_through(oldest.flatten()), if oldest.is_some() => {
                        if indexed.is_err() || step.ack_indexed(&mut unacked, &mut consumed).await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        if fetched.as_ref().is_ok_and(|m| !m.is_empty()) {
            reset_at_end = false;
        }
        match fetched {
            Ok(messages) if messages.is_empty() => {
                // Idle: everything stored is acknowledged once indexed, then reads are served.
                if step.ack_all(&mut unacked, &mut consumed).await.is_err() {
                    return;
                }
                // Deliveries lost at the stream's end (a pull that failed on the way, or one that
                // lost messages) leave nothing after them for the order check to see: only the
                // consumer's own count shows them. Unchecked, reads would miss them until the ack
                // wait brought them again. The check never holds reads up: a count not read in
                // time, or a second one right after a reset that brought nothing, serves as
                // before and the ack wait remains the backstop.
                let lost = if step.acks == OwnerAcks::Cumulative && !reset_at_end {
                    lost_at_end(&consumer, next_delivery).await
                } else {
                    None
                };
                match lost {
                    None => serving.caught_up(),
                    Some(delivered) => {
                        tracing::warn!(
                            shard,
                            epoch,
                            delivered,
                            received = next_delivery - 1,
                            from = consumed.through + 1,
                            "deliveries of the shard's consumer never arrived; consuming again from its ack floor"
                        );
                        reset_at_end = true;
                        if !step
                            .consume_again(&consumed, &mut consumer, &mut next_delivery)
                            .await
                        {
                            return;
                        }
                        continue;
                    }
                }
            }
            Ok(messages)
                if step.acks == OwnerAcks::Cumulative
                    && !delivered_in_order(&messages, &mut next_delivery) =>
            {
                // A delivery was lost: consume again from the ack floor, unacknowledged
                // batches included (the store drops what it has).
                tracing::warn!(
                    shard,
                    epoch,
                    from = consumed.through + 1,
                    "a delivery of the shard's consumer never arrived; consuming again from its ack floor"
                );
                unacked = Unacked::default();
                if !step
                    .consume_again(&consumed, &mut consumer, &mut next_delivery)
                    .await
                {
                    return;
                }
                continue;
            }
            Ok(messages) => {
                // The last message's count of what follows it: 0 when the batch reached the
                // stream's end as the server saw it.
                let at_end = messages
                    .last()
                    .and_then(|m| m.info().ok())
                    .is_some_and(|i| i.pending == 0);
                match step.store_batch(messages, &mut consumed).await {
                    Ok(batch) => unacked.push(batch),
                    Err(Stopped) => return,
                }
                // Served only once all the shard had is indexed (and acknowledged).
                let ready = at_end && !serving.marked;
                let acked = if ready {
                    step.ack_all(&mut unacked, &mut consumed).await
                } else {
                    step.ack_indexed(&mut unacked, &mut consumed).await
                };
                if acked.is_err() {
                    return;
                }
                if ready {
                    serving.caught_up();
                }
            }
            Err(e) => {
                tracing::warn!(shard, error = %e, "fetching from the shard's consumer failed; trying again");
                if !pause(&stop).await {
                    return;
                }
                continue;
            }
        }
        // A snapshot published (or not): taken in. Then, every interval, the next one.
        if publishing.as_ref().is_some_and(|p| p.task.is_finished()) {
            let mut done = publishing.take().expect("checked above");
            let outcome = (&mut done.task).await.unwrap_or_else(|e| {
                Err(SnapshotError::Task(format!(
                    "the snapshot task failed: {e}"
                )))
            });
            match outcome {
                Ok(next) => {
                    shared.metrics.observe_snapshot_published(shard);
                    snapshot = next;
                    published += 1;
                }
                Err(SnapshotError::Metastore(e @ MetastoreError::Fenced { .. })) => {
                    tracing::error!(shard, epoch, error = %e, "the snapshot was refused: this node no longer owns the shard");
                    return;
                }
                Err(e) => {
                    tracing::warn!(shard, epoch, error = %e, "snapshot failed; trying again at the next interval");
                    consumed.orgs.append(&mut done.orgs);
                }
            }
        }
        if publishing.is_some() || snapshot_at.elapsed() < shared.snapshots.interval {
            continue;
        }
        // A snapshot holds what the index committed: everything stored is acknowledged first,
        // so `consumed.through` is where the shard's indexed records end, and every record of
        // its orgs stored so far is below `lsn_below`.
        if step.ack_all(&mut unacked, &mut consumed).await.is_err() {
            return;
        }
        if consumed.through <= snapshot.stream_seq {
            // Nothing new: the published snapshot is current.
            shared.metrics.observe_snapshot_published(shard);
            snapshot_at = Instant::now();
            continue;
        }
        snapshot_at = Instant::now();
        let taken = Consumed {
            through: consumed.through,
            orgs: std::mem::take(&mut consumed.orgs),
        };
        let lsn_below = shared.store.stats().next_lsn;
        let collect = (published + 1).is_multiple_of(COLLECT_EVERY);
        publishing = Some(Publishing {
            orgs: taken.orgs.clone(),
            task: tokio::spawn({
                let (shared, held, stop) = (shared.clone(), held.clone(), stop.clone());
                let (acks, last) = (step.acks, snapshot.clone());
                async move {
                    let step = Step {
                        shared: &shared,
                        shard,
                        epoch,
                        held: &held,
                        stop: &stop,
                        acks,
                    };
                    let (next, location) = step.snapshot(last, &taken, lsn_below).await?;
                    if collect && step.may_act().is_ok() {
                        step.collect(&location).await;
                    }
                    Ok(next)
                }
            }),
        });
    }
    tracing::info!(shard, epoch, "shard owner stopped");
}

/// What a shard's task has consumed since its snapshot.
struct Consumed {
    /// Every message of the shard up to this stream sequence is stored, indexed and
    /// acknowledged.
    through: u64,
    /// The orgs whose records came (stored, maybe not indexed yet) since the last snapshot.
    orgs: BTreeSet<String>,
}

/// A snapshot of the shard being taken and published by a task of its own. Dropped with the
/// owner's task, it is stopped: a publish it no longer makes is fenced anyway, and the objects
/// it uploaded are collected later.
struct Publishing {
    /// The orgs it covers: covered again by the next one if this one fails.
    orgs: BTreeSet<String>,
    task: JoinHandle<Result<Manifest, SnapshotError>>,
}

impl Drop for Publishing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A batch of a shard's messages, stored, waiting for the index to commit it before it is
/// acknowledged.
struct StoredBatch {
    /// The store's last LSN once the batch was stored: the index commits through it, so this
    /// batch's records and the originals of its duplicates, before the batch is acknowledged.
    /// `None` when the store holds nothing yet.
    lsn: Option<Lsn>,
    /// What the batch's ack acknowledges: each kept message, or under cumulative acks the
    /// batch's highest.
    messages: Vec<Message>,
    /// The batch's last stream sequence.
    through: Option<u64>,
}

/// A shard's stored batches not yet acknowledged, oldest first, at most
/// [`MAX_PENDING_BATCHES`]: each is acknowledged once the index committed it, never before an
/// older one, so a consumer's ack floor never passes what a search finds.
#[derive(Default)]
struct Unacked {
    batches: VecDeque<StoredBatch>,
}

impl Unacked {
    fn is_full(&self) -> bool {
        self.batches.len() >= MAX_PENDING_BATCHES
    }

    fn push(&mut self, batch: StoredBatch) {
        self.batches.push_back(batch);
    }

    /// The LSN the oldest batch waits for (`None` when there is no batch).
    fn oldest_lsn(&self) -> Option<Option<Lsn>> {
        self.batches.front().map(|b| b.lsn)
    }
}

/// Whether `messages` are the deliveries numbered from `next` on, each once (the consumer
/// numbers every delivery, redeliveries too); moves `next` past them.
fn delivered_in_order(messages: &[Message], next: &mut u64) -> bool {
    for message in messages {
        match message.info() {
            Ok(info) if info.consumer_sequence == *next => *next += 1,
            _ => return false,
        }
    }
    true
}

/// The consumer's count of deliveries when it passed the last one received (`next_delivery` is
/// one past it); `None` when it did not, or when the count was not read within
/// [`COUNT_WAIT`].
async fn lost_at_end(consumer: &PullConsumer, next_delivery: u64) -> Option<u64> {
    match tokio::time::timeout(COUNT_WAIT, consumer.get_info()).await {
        Ok(Ok(info)) => {
            let delivered = info.delivered.consumer_sequence;
            (delivered >= next_delivery).then_some(delivered)
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "the shard's consumer count not read");
            None
        }
        Err(_) => {
            tracing::debug!("the shard's consumer count not read in time");
            None
        }
    }
}

/// Up to [`BATCH_MESSAGES`] messages: those the consumer has now, at once, or when it has none
/// the first to come within [`FETCH_WAIT`] ([`owner_fetch`]).
async fn fetch(consumer: &PullConsumer) -> Result<Vec<Message>, async_nats::Error> {
    owner_fetch(consumer, BATCH_MESSAGES, FETCH_WAIT).await
}

/// The shard must be given up (stopped, lease gone, store closed): nothing more is written or
/// acknowledged; what was not acknowledged is delivered again to the next owner.
struct Stopped;

/// One batch of one shard, under one lease.
struct Step<'a> {
    shared: &'a Shared,
    shard: u32,
    epoch: i64,
    held: &'a watch::Receiver<Held>,
    stop: &'a CancellationToken,
    /// How the shard's consumer takes acks.
    acks: OwnerAcks,
}

impl Step<'_> {
    /// Makes the shard's consumer again from one past its ack floor (`consumed.through`), after
    /// deliveries the owner never received; what it stored past the floor comes again and the
    /// store drops it. `false` once the task is stopped.
    async fn consume_again(
        &self,
        consumed: &Consumed,
        consumer: &mut PullConsumer,
        next_delivery: &mut u64,
    ) -> bool {
        match self
            .shared
            .log
            .reset_owner_consumer(self.shard, self.epoch, consumed.through + 1)
            .await
        {
            Ok(c) => {
                *next_delivery = c.cached_info().delivered.consumer_sequence + 1;
                *consumer = c;
                true
            }
            Err(e) => {
                tracing::warn!(shard = self.shard, error = %e, "cannot make the shard's consumer again; trying again");
                pause(self.stop).await
            }
        }
    }

    fn may_act(&self) -> Result<(), Stopped> {
        if self.stop.is_cancelled() || !may_act(self.held, self.shard, self.epoch) {
            return Err(Stopped);
        }
        Ok(())
    }

    /// Stores `messages` in stream order (their orgs noted in `consumed`); returns them to be
    /// acknowledged once the index committed them.
    async fn store_batch(
        &self,
        messages: Vec<Message>,
        consumed: &mut Consumed,
    ) -> Result<StoredBatch, Stopped> {
        let sequence = |m: &Message| m.info().ok().map(|i| i.stream_sequence);
        let through = messages.iter().filter_map(sequence).max();
        // Cumulative acks: the batch's highest message acknowledges all of it, refused ones
        // included.
        let cover = match self.acks {
            OwnerAcks::Cumulative => messages.iter().max_by_key(|&m| sequence(m)).cloned(),
            OwnerAcks::PerMessage => None,
        };
        let mut records = Vec::with_capacity(messages.len());
        let mut kept = Vec::with_capacity(messages.len());
        for message in messages {
            match parse(&message.payload) {
                Ok(record) => {
                    records.push(record);
                    kept.push(message);
                }
                Err(reason) => self.refuse(&message, &reason).await,
            }
        }
        consumed
            .orgs
            .extend(records.iter().map(|r| r.org_id.clone()));
        let stored = self.store(records, &mut kept).await?;
        tracing::debug!(
            shard = self.shard,
            messages = kept.len(),
            stored,
            "shard batch stored"
        );
        Ok(StoredBatch {
            // Everything stored so far, this batch's originals of its duplicates included.
            lsn: self.shared.store.stats().next_lsn.checked_sub(1),
            messages: cover.map_or(kept, |last| vec![last]),
            through,
        })
    }

    /// Acknowledges `batch`, whose records the index committed; records it in `consumed`.
    async fn ack(&self, batch: StoredBatch, consumed: &mut Consumed) -> Result<(), Stopped> {
        self.may_act()?;
        for message in &batch.messages {
            // A lost ack only means a redelivery, which the store drops.
            if let Err(e) = message.ack().await {
                tracing::warn!(shard = self.shard, error = %e, "ack failed; the message comes again");
            }
        }
        if let Some(through) = batch.through {
            consumed.through = consumed.through.max(through);
        }
        Ok(())
    }

    /// Waits until the oldest batch of `unacked` is indexed, then acknowledges it.
    async fn ack_oldest(
        &self,
        unacked: &mut Unacked,
        consumed: &mut Consumed,
    ) -> Result<(), Stopped> {
        let Some(batch) = unacked.batches.pop_front() else {
            return Ok(());
        };
        self.wait_indexed_through(batch.lsn).await?;
        self.ack(batch, consumed).await
    }

    /// Acknowledges, oldest first, the batches of `unacked` the index has already committed.
    async fn ack_indexed(
        &self,
        unacked: &mut Unacked,
        consumed: &mut Consumed,
    ) -> Result<(), Stopped> {
        while let Some(lsn) = unacked.oldest_lsn() {
            let indexed = lsn.is_none_or(|lsn| {
                self.shared
                    .store
                    .wait_indexed_through(lsn)
                    .now_or_never()
                    .is_some()
            });
            if !indexed {
                break;
            }
            self.ack_oldest(unacked, consumed).await?;
        }
        Ok(())
    }

    /// Waits until every batch of `unacked` is indexed and acknowledges them all.
    async fn ack_all(&self, unacked: &mut Unacked, consumed: &mut Consumed) -> Result<(), Stopped> {
        while !unacked.batches.is_empty() {
            self.ack_oldest(unacked, consumed).await?;
        }
        Ok(())
    }

    /// Waits until the index has committed everything stored so far.
    async fn wait_indexed(&self) -> Result<(), Stopped> {
        self.wait_indexed_through(self.shared.store.stats().next_lsn.checked_sub(1))
            .await
    }

    /// Waits until the index has committed every record through `lsn` (at once for `None`).
    async fn wait_indexed_through(&self, lsn: Option<Lsn>) -> Result<(), Stopped> {
        if let Some(lsn) = lsn {
            tokio::select! {
                _ = self.stop.cancelled() => return Err(Stopped),
                _ = self.shared.store.wait_indexed_through(lsn) => {}
            }
        }
        Ok(())
    }

    /// Brings the shard's latest snapshot into the local store: its orgs' retention checkpoints
    /// (saved locally first), then their sealed records after them, each chain continuing from
    /// where this node's store has it. Returns its manifest (an empty one when the shard has
    /// none), or `None` if the shard was given up meanwhile.
    async fn restore(&self) -> Result<Option<Manifest>, SnapshotError> {
        let snapshots = &self.shared.snapshots;
        let started = Instant::now();
        let Some(manifest) = snapshots
            .store
            .latest(&snapshots.metastore, self.shard)
            .await?
        else {
            tracing::info!(
                shard = self.shard,
                "the shard has no snapshot; reading its stream from the start"
            );
            return Ok(Some(Manifest::empty(self.shard, self.epoch)));
        };
        // Durable before any chain moves: at a restart the store's heads come from there.
        self.checkpoints()
            .adopt(&manifest.retention)
            .map_err(|e| SnapshotError::Task(format!("saving the chain checkpoints: {e}")))?;
        let mut restored = 0;
        for (org, head) in &manifest.chain_heads {
            // The manifest's head says how far the org goes: a node that has it has the rest.
            if self.has_record(org, head).await? {
                continue;
            }
            for chunk in manifest.chunks.iter().filter(|c| &c.org == org) {
                let records = snapshots.store.get_chunk(chunk).await?;
                let runs = retained_runs(records, manifest.retention.get(org)).map_err(|seq| {
                    SnapshotError::Damaged {
                        key: chunk.key.clone(),
                        reason: format!("seq {seq} follows a gap no retention tombstone covers"),
                    }
                })?;
                for (from, run) in runs {
                    if self.may_act().is_err() {
                        return Ok(None);
                    }
                    if let Some(from) = from {
                        self.shared
                            .store
                            .continue_chains(vec![(org.clone(), from)])
                            .await?;
                    }
                    let admissions = self.shared.store.restore(run).await?;
                    if admissions.contains(&Admission::ChainConflict) {
                        return Err(SnapshotError::Conflict {
                            org: chunk.org.clone(),
                            key: chunk.key.clone(),
                        });
                    }
                    restored += admissions
                        .iter()
                        .filter(|a| matches!(a, Admission::Stored { .. }))
                        .count();
                }
            }
        }
        // Heads past the last record kept (deleted tails, orgs with nothing left).
        let heads = manifest
            .chain_heads
            .iter()
            .map(|(org, h)| (org.clone(), h.clone()))
            .collect();
        self.shared.store.continue_chains(heads).await?;
        if self.wait_indexed().await.is_err() {
            return Ok(None);
        }
        let seconds = started.elapsed().as_secs_f64();
        self.shared.metrics.observe_restore(self.shard, seconds);
        tracing::info!(
            shard = self.shard,
            epoch = self.epoch,
            from_epoch = manifest.epoch,
            stream_seq = manifest.stream_seq,
            orgs = manifest.chain_heads.len(),
            restored,
            seconds,
            "shard snapshot restored"
        );
        Ok(Some(manifest))
    }

    fn checkpoints(&self) -> &ChainCheckpoints {
        self.shared.retention.checkpoints()
    }

    /// Whether the local index holds `org`'s record `head` (one org's records from that seq on,
    /// not a scan of the index).
    async fn has_record(
        &self,
        org: &str,
        head: &codestax_common::chain::ChainHead,
    ) -> Result<bool, SnapshotError> {
        let index = self.shared.index.clone();
        let (org, head) = (org.to_string(), head.clone());
        tokio::task::spawn_blocking(move || {
            let mut found = false;
            index.for_each_chained(&org, head.seq, |r| {
                found = r.seq == Some(head.seq) && r.hash.as_deref() == Some(head.hash.as_str());
                false
            })?;
            Ok(found)
        })
        .await
        .map_err(|e| SnapshotError::Task(format!("the index task failed: {e}")))?
    }

    /// The lease this task acts under, as the keeper holds it now (fenced if it is gone).
    fn lease(&self) -> Result<Lease, MetastoreError> {
        self.held
            .borrow()
            .get(&self.shard)
            .filter(|l| l.epoch == self.epoch)
            .cloned()
            .ok_or_else(|| MetastoreError::Fenced {
                shard: self.shard,
                node: String::new(),
                epoch: self.epoch,
            })
    }

    /// Deletes the shard's objects no restore can need any more, after publishing `latest`
    /// ([`SnapshotStore::collect`]), and its snapshot rows but the newest [`KEEP_MANIFESTS`]
    /// ([`MetastoreLink::trim`]); a failure is only logged (the next run tries again).
    async fn collect(&self, latest: &str) {
        self.collect_objects(latest).await;
        let Ok(lease) = self.lease() else {
            return;
        };
        match self
            .shared
            .snapshots
            .metastore
            .trim(&lease, KEEP_MANIFESTS)
            .await
        {
            Ok(rows) => tracing::info!(shard = self.shard, rows, "old snapshot rows deleted"),
            Err(e) => {
                tracing::warn!(shard = self.shard, error = %e, "deleting old snapshot rows failed; trying again later")
            }
        }
    }

    async fn collect_objects(&self, latest: &str) {
        let grace =
            (self.shared.snapshots.interval * COLLECT_GRACE_INTERVALS).max(COLLECT_GRACE_MIN);
        match self
            .shared
            .snapshots
            .store
            .collect(self.shard, latest, grace)
            .await
        {
            Ok(c) => tracing::info!(
                shard = self.shard,
                manifests = c.manifests,
                chunks = c.chunks,
                "old snapshot objects deleted"
            ),
            Err(e) => {
                tracing::warn!(shard = self.shard, error = %e, "deleting old snapshot objects failed; trying again later")
            }
        }
    }

    /// Uploads what `consumed.orgs` gained since `last` (chunks) and stored below `lsn_below`,
    /// merges small chunks, then uploads a manifest through `consumed.through` and publishes it
    /// in the metastore under this lease. Returns the new manifest and where it is. The owner
    /// consumes on meanwhile: `lsn_below` keeps out what it stored after `consumed.through`.
    async fn snapshot(
        &self,
        last: Manifest,
        consumed: &Consumed,
        lsn_below: u64,
    ) -> Result<(Manifest, String), SnapshotError> {
        let lease = self.lease()?;
        let store = &self.shared.snapshots.store;
        let mut next = Manifest {
            epoch: self.epoch,
            stream_seq: consumed.through,
            ..last
        };
        // What retention deleted since: out of the manifest, its checkpoints in.
        let orgs: BTreeSet<String> = next
            .chain_heads
            .keys()
            .chain(&consumed.orgs)
            .cloned()
            .collect();
        for org in &orgs {
            let retained = self.checkpoints().get(org);
            if retained != Default::default() && next.retention.get(org) != Some(&retained) {
                next.retain(org, retained);
            }
        }
        let mut records = 0;
        for org in &consumed.orgs {
            let tombstoned = next.tombstoned(org);
            // A chunk at a time: memory stays bounded however much an org gained.
            loop {
                let after = next.chain_heads.get(org).map_or(0, |h| h.seq);
                let chunk = self
                    .chain_after(org, after, lsn_below, CHUNK_RECORDS, &tombstoned)
                    .await?;
                if chunk.is_empty() {
                    break;
                }
                store.add_chunk(&mut next, &chunk).await?;
                records += chunk.len();
                if chunk.len() < CHUNK_RECORDS {
                    break;
                }
            }
            next.settle(org);
        }
        let compacted = store.compact(&mut next).await?;
        let location = store
            .publish(&self.shared.snapshots.metastore, &lease, &next)
            .await?;
        tracing::info!(
            shard = self.shard,
            epoch = self.epoch,
            stream_seq = next.stream_seq,
            records,
            compacted,
            %location,
            "shard snapshot published"
        );
        Ok((next, location))
    }

    /// Up to `limit` of `org`'s indexed records after seq `after` stored below `lsn_below`, in
    /// order; refused unless consecutive but for the seqs retention deleted (`tombstoned`).
    async fn chain_after(
        &self,
        org: &str,
        after: u64,
        lsn_below: u64,
        limit: usize,
        tombstoned: &BTreeSet<u64>,
    ) -> Result<Vec<AuditRecord>, SnapshotError> {
        let index = self.shared.index.clone();
        let org = org.to_string();
        let tombstoned = tombstoned.clone();
        tokio::task::spawn_blocking(move || {
            let mut records: Vec<AuditRecord> = Vec::new();
            let mut expected = after + 1;
            let mut gap = false;
            index.for_each_chained_below(&org, after + 1, lsn_below, |r| {
                let seq = r.seq.unwrap_or(0);
                while seq > expected && tombstoned.contains(&expected) {
                    expected += 1;
                }
                if seq != expected {
                    gap = true;
                    return false;
                }
                expected += 1;
                records.push(r.clone());
                records.len() < limit
            })?;
            if gap {
                return Err(SnapshotError::Gap {
                    after: expected - 1,
                    org,
                });
            }
            Ok(records)
        })
        .await
        .map_err(|e| SnapshotError::Task(format!("the index task failed: {e}")))?
    }

    /// Submits `records` (paired with `messages`) to the store until it takes them; a record
    /// the store can never take is refused and left out. Returns how many were new.
    async fn store(
        &self,
        mut records: Vec<AuditRecord>,
        messages: &mut Vec<Message>,
    ) -> Result<usize, Stopped> {
        loop {
            self.may_act()?;
            if records.is_empty() {
                return Ok(0);
            }
            match self.shared.store.submit(records.clone()).await {
                Ok(admissions) => {
                    let count =
                        |f: fn(&Admission) -> bool| admissions.iter().filter(|a| f(a)).count();
                    let stored = count(|a| matches!(a, Admission::Stored { .. }));
                    let conflicts = count(|a| matches!(a, Admission::IdConflict));
                    self.shared.metrics.record_accepted(
                        OWNER_RECEIVER,
                        stored as u64,
                        (admissions.len() - stored - conflicts) as u64,
                    );
                    // The ingesting node acknowledged them before the owner could know: they
                    // are counted and logged here (the store logs each id).
                    if conflicts > 0 {
                        tracing::error!(
                            shard = self.shard,
                            conflicts,
                            "records whose ids are stored for other content were not stored"
                        );
                        self.shared
                            .metrics
                            .record_rejected(OWNER_RECEIVER, "id", conflicts as u64);
                    }
                    return Ok(stored);
                }
                Err(StoreError::RecordTooLarge { index, len }) => {
                    records.remove(index);
                    let message = messages.remove(index);
                    let reason = format!("the sealed record is {len} bytes, over the WAL's limit");
                    self.refuse(&message, &reason).await;
                }
                Err(StoreError::Closed) => return Err(Stopped),
                Err(e) => {
                    tracing::warn!(shard = self.shard, error = %e, "the store refused the batch; trying again");
                    tokio::select! {
                        _ = self.stop.cancelled() => return Err(Stopped),
                        _ = tokio::time::sleep(RETRY_AFTER) => {}
                    }
                }
            }
        }
    }

    /// A message no owner can ever store (the ingest node checked it, so this is a bug or a
    /// foreign publisher): logged with where it is, counted, and terminated so it does not stop
    /// the shard. It stays in the stream.
    async fn refuse(&self, message: &Message, reason: &str) {
        let stream_seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        tracing::error!(
            shard = self.shard,
            stream_seq,
            reason,
            "a message of the shard cannot be stored; it is left in the stream and skipped"
        );
        self.shared
            .metrics
            .record_rejected(OWNER_RECEIVER, "payload", 1);
        // Under cumulative acks a TERM acknowledges every message before it, stored or not
        // yet indexed: the batch's ack covers the refused message instead.
        if self.acks == OwnerAcks::PerMessage
            && self.may_act().is_ok()
            && let Err(e) = message.ack_with(AckKind::Term).await
        {
            tracing::warn!(shard = self.shard, error = %e, "cannot terminate the message; it comes again");
        }
    }
}

/// A message's record: canonical JSON with the id, `received_at` and provenance the ingesting
/// node set, not yet sealed (the owner seals).
fn parse(payload: &[u8]) -> Result<AuditRecord, String> {
    let record: AuditRecord =
        serde_json::from_slice(payload).map_err(|e| format!("not a record: {e}"))?;
    if record.id().is_empty() {
        return Err("the record has no id".into());
    }
    if record.received_at.is_none() {
        return Err("the record has no received_at".into());
    }
    if record.provenance.is_none() {
        return Err("the record has no provenance".into());
    }
    if record.seq.is_some() {
        return Err("the record is already sealed (seq is set)".into());
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_takes_stamped_records_and_names_what_is_missing() {
        use codestax_common::Provenance;
        let bare = br#"{"org_id":"acme","id":"a","action":"auth.login","actor":{"id":"ada"},
            "time":"2026-12-04T12:00:00Z","received_at":"2026-12-04T12:00:01Z"}"#;
        let mut stamped: AuditRecord = serde_json::from_slice(bare).unwrap();
        stamped.provenance = Some(Provenance::Ingest {
            key_id: "k1".into(),
        });
        let record = parse(stamped.canonical_json().as_bytes()).unwrap();
        assert_eq!(record, stamped);

        assert!(parse(bare).unwrap_err().contains("no provenance"));
        let mut no_id = stamped.clone();
        no_id.id = None;
        assert!(
            parse(no_id.canonical_json().as_bytes())
                .unwrap_err()
                .contains("no id")
        );
        let mut sealed = stamped.clone();
        sealed.seq = Some(1);
        assert!(
            parse(serde_json::to_string(&sealed).unwrap().as_bytes())
                .unwrap_err()
                .contains("sealed")
        );
        assert!(parse(b"{").unwrap_err().starts_with("not a record"));
    }

    fn lease(shard: u32, epoch: i64, valid_for: Duration) -> Lease {
        Lease {
            shard,
            owner: "node-a".into(),
            epoch,
            expires_at: chrono::Utc::now(),
            valid_until: Instant::now() + valid_for,
        }
    }

    async fn wait_for_starts(starts: &std::sync::Mutex<Vec<(u32, i64)>>, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while starts.lock().unwrap().len() < n {
            assert!(Instant::now() < deadline, "{:?}", starts.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// An owner that ended by itself (its lease's local deadline passed while the keeper could
    /// not renew it) starts again once the keeper renews the lease under the same epoch; before,
    /// the shard stayed unserved for as long as the epoch lasted. A new epoch replaces the
    /// owner; the stop ends it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_owner_that_ended_under_a_lease_still_held_starts_again() {
        let (keeper, held) = watch::channel(Held::new());
        let stop = CancellationToken::new();
        let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
        // An owner that acts while it may (as `own_shard` does) and notes each start.
        let owner = {
            let starts = starts.clone();
            move |shard, epoch, held: watch::Receiver<Held>, stop: CancellationToken| {
                starts.lock().unwrap().push((shard, epoch));
                async move {
                    while may_act(&held, shard, epoch) && !stop.is_cancelled() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        };
        let supervisor = tokio::spawn(supervise(held, stop.clone(), owner));

        keeper.send_replace(Held::from([(0, lease(0, 1, Duration::from_millis(200)))]));
        wait_for_starts(&starts, 1).await;
        // The deadline passes with no renewal: the owner ends, and is not started again on a
        // lease that is not valid.
        tokio::time::sleep(RETRY_AFTER + Duration::from_millis(500)).await;
        assert_eq!(*starts.lock().unwrap(), [(0, 1)]);

        // Renewed under the same epoch.
        keeper.send_replace(Held::from([(0, lease(0, 1, Duration::from_secs(60)))]));
        wait_for_starts(&starts, 2).await;
        // A new epoch: the running owner stops, one under the new epoch starts.
        keeper.send_replace(Held::from([(0, lease(0, 2, Duration::from_secs(60)))]));
        wait_for_starts(&starts, 3).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(*starts.lock().unwrap(), [(0, 1), (0, 1), (0, 2)]);

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), supervisor)
            .await
            .expect("the supervisor returns once its owners stopped")
            .unwrap();
    }

    proptest::proptest! {
        /// Any bytes: an answer, never a panic.
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(&bytes);
        }
    }
}
