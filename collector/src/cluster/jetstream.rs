//! The JetStream log ingest publishes to in cluster mode: one stream, a subject per shard, each
//! record's canonical JSON as a message whose `Nats-Msg-Id` names its org, id and content
//! ([`msg_id`]). A batch is appended only when every one of its messages has its publish ack —
//! stored (and, with the servers' `sync_interval: always`, fsynced) on a quorum of the stream's
//! replicas.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, stream};
use async_nats::{HeaderMap, ServerAddr};
use codestax_common::AuditRecord;

use super::error::LogError;
use super::shard::{msg_id, owner_consumer, shard_of, subject, subjects};

/// The header naming a message's org (consumers need not parse the payload to route it).
pub const ORG_HEADER: &str = "Codestax-Org";

/// How long JetStream remembers a `Nats-Msg-Id` to drop a resend.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long a publish waits for its ack. A publish in flight to a stream leader that dies gets
/// no ack even after the election: only the client's resend (same ids, deduplicated) gets
/// through, so this is how long ingest stalls when the leader is lost. Still far above a
/// quorum's fsync under load.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a publish nobody answered ("no stream found for given subject") is sent again. The
/// stream exists (it was created or found at connect); that answer comes while the interest of
/// a stream just created has not reached this client's server yet, or while its replicas elect a
/// leader. A resend is safe: its `Nats-Msg-Id` is the same.
pub const NO_STREAM_PATIENCE: Duration = Duration::from_secs(2);

/// How long an owner may take from a message's delivery to its ack (stored, indexed, committed)
/// before JetStream delivers it again.
pub const OWNER_ACK_WAIT: Duration = Duration::from_secs(10);

/// Most messages an owner's consumer hands out without their ack. The owner keeps up to
/// `16 × 1,000` stored messages waiting for their index commit while it fetches the next ones
/// (`owner.rs`, `MAX_PENDING_BATCHES`): the cap sits above that, so the pipeline is bounded by
/// the owner and never by a fetch the server answers empty (JetStream's default is 1,000: one
/// batch at a time).
pub(crate) const OWNER_MAX_ACK_PENDING: i64 = 20_000;

/// How long an owner's consumer may go unused before the servers remove it (its owner is gone:
/// the next one has its own).
pub const OWNER_CONSUMER_IDLE: Duration = Duration::from_secs(300);

/// The stream keeps each message this many snapshot intervals ([`stream_max_age`]).
pub const STREAM_MAX_AGE_SNAPSHOTS: u32 = 1440;
/// ... and never less than this.
pub const STREAM_MAX_AGE_FLOOR: Duration = Duration::from_secs(24 * 3600);

/// How long the stream keeps a message: what a shard's next owner replays after its snapshot
/// must still be there, through snapshots failing (object store down) or a shard with no owner
/// for a while (docs/cluster.md, "Sizing"): [`STREAM_MAX_AGE_SNAPSHOTS`] intervals, at least
/// [`STREAM_MAX_AGE_FLOOR`]. Older messages are in a snapshot unless snapshots have failed for
/// that long (`cluster_snapshot_age_seconds` shows it).
pub(crate) fn stream_max_age(snapshot_interval: Duration) -> Duration {
    (snapshot_interval * STREAM_MAX_AGE_SNAPSHOTS).max(STREAM_MAX_AGE_FLOOR)
}

/// Up to `max` of an owner consumer's messages, in delivery order, for the owner to store: those
/// the consumer holds now, at once (a no-wait pull: the server sends what it has and ends the
/// request); only when it holds none does the pull wait, at most `wait`, for the next message,
/// which comes with those that are there by then. Empty when nothing came within `wait`.
///
/// Never a pull that waits for more once it has messages: a pull of `max` with an expiry is
/// answered only when `max` messages came or the expiry passed, so on a shard taking fewer than
/// `max` messages per expiry every message waited up to the whole expiry before its owner could
/// store it — on top of the index commit and of the time the owner spends between fetches (its
/// snapshot), which made reads miss records acknowledged more than 2 s before (`cluster_three`).
///
/// Each pull ends on the server's own answer (a no-wait pull at once, a waiting one at `wait`
/// or its first message); the client gives up [`FETCH_GRACE`] after that, as `async-nats` does
/// for a waiting pull: the owner then treats it as a failed fetch, and a delivery lost with it
/// is caught by the consumer sequence check.
pub async fn owner_fetch(
    consumer: &PullConsumer,
    max: usize,
    wait: Duration,
) -> Result<Vec<jetstream::Message>, async_nats::Error> {
    let ready = drain(consumer.fetch().max_messages(max).messages(), FETCH_GRACE).await?;
    if !ready.is_empty() || max == 0 {
        return Ok(ready);
    }
    let mut first = drain(
        consumer.batch().max_messages(1).expires(wait).messages(),
        wait + FETCH_GRACE,
    )
    .await?;
    if !first.is_empty() && max > 1 {
        let rest = drain(
            consumer.fetch().max_messages(max - 1).messages(),
            FETCH_GRACE,
        )
        .await?;
        first.extend(rest);
    }
    Ok(first)
}

/// How long past its own end a pull may go unanswered before [`owner_fetch`] gives up on it.
pub const FETCH_GRACE: Duration = Duration::from_secs(5);

/// Every message of a pull, or its error; an error as well if it is not over within `limit`.
async fn drain<F>(pull: F, limit: Duration) -> Result<Vec<jetstream::Message>, async_nats::Error>
where
    F: std::future::Future<Output = Result<pull::Batch, pull::BatchError>>,
{
    use futures_util::StreamExt as _;
    let collect = async {
        let mut batch = pull.await?;
        let mut messages = Vec::new();
        while let Some(message) = batch.next().await {
            messages.push(message?);
        }
        Ok::<_, async_nats::Error>(messages)
    };
    tokio::time::timeout(limit, collect)
        .await
        .map_err(|_| format!("a pull got no end from the server within {limit:?}"))?
}

/// How an owner acknowledges its consumer's messages. A durable consumer's ack policy is fixed
/// when it is made, so the owner follows the consumer it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnerAcks {
    /// `AckPolicy::All`: one ack per stored batch, for its highest stream sequence, acknowledges
    /// every message before it (one ack per 1,000 messages instead of 1,000, each of which the
    /// servers replicate in the consumer's state). Every consumer this version makes.
    Cumulative,
    /// `AckPolicy::Explicit`: every message acknowledged on its own; a consumer an older
    /// version made, used as it is until its epoch ends.
    PerMessage,
}

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// In the stream at this sequence.
    Stored { seq: u64 },
    /// Its `Nats-Msg-Id` was seen within the duplicate window: not stored again.
    Duplicate,
}

/// Where the stream is and how it is cut.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub urls: Vec<String>,
    pub stream: String,
    pub replicas: u8,
    pub shards: u32,
    /// The connection's name in the servers' monitoring (the node id).
    pub client_name: String,
    /// How long the stream keeps a message (`stream_max_age`).
    pub max_age: Duration,
    /// How long [`JetStreamLog::connect`] keeps trying to connect and set the stream up while
    /// the servers cannot yet (`cluster.nats.setup_timeout`).
    pub setup_timeout: Duration,
}

/// First wait between two tries at connecting or setting the stream up; it doubles up to
/// [`SETUP_BACKOFF_MAX`].
const SETUP_BACKOFF_FIRST: Duration = Duration::from_millis(250);
const SETUP_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The start's patience with servers not ready yet: one `setup_timeout` for connecting and
/// setting the stream up together.
struct Patience {
    started: Instant,
    timeout: Duration,
    backoff: Duration,
    /// Tries made so far.
    attempts: u32,
}

impl Patience {
    fn new(timeout: Duration) -> Patience {
        Patience {
            started: Instant::now(),
            timeout,
            backoff: SETUP_BACKOFF_FIRST,
            attempts: 1,
        }
    }

    /// After a failure that may pass: warns, waits the next back-off and returns `true`, or
    /// `false` once the patience is spent.
    async fn wait(&mut self, what: &str, target: &str, error: &str) -> bool {
        let left = self.timeout.saturating_sub(self.started.elapsed());
        if left.is_zero() {
            return false;
        }
        tracing::warn!(
            attempt = self.attempts,
            error,
            left = %format_args!("{left:.1?}"),
            "{what} ({target}); trying again"
        );
        tokio::time::sleep(self.backoff.min(left)).await;
        self.backoff = (self.backoff * 2).min(SETUP_BACKOFF_MAX);
        self.attempts += 1;
        true
    }
}

/// Whether a failed connection may succeed when tried again: no server listening or answering
/// yet, or its name not resolving yet. Refused credentials or TLS, or an address that does not
/// parse, stay so.
fn connect_may_pass(kind: async_nats::ConnectErrorKind) -> bool {
    use async_nats::ConnectErrorKind as Kind;
    match kind {
        Kind::Io | Kind::TimedOut | Kind::Dns | Kind::MaxReconnects => true,
        Kind::ServerParse | Kind::Authentication | Kind::AuthorizationViolation | Kind::Tls => {
            false
        }
    }
}

/// A failed try at setting the stream up, and whether another may pass.
struct SetupFailure {
    reason: String,
    may_pass: bool,
}

impl SetupFailure {
    /// What creating, reading or updating the stream failed with. The servers may yet place and
    /// lead the stream when they did not answer in time, were not there to answer, or said the
    /// cluster is not ready (a peer not seen yet, no leader); anything else, such as its subjects
    /// taken by another stream, a config the servers refuse, will be refused again. "No
    /// suitable peers" is also what `replicas` above the cluster's size gives, which never
    /// passes: its reason asks about the key.
    fn create(e: jetstream::context::CreateStreamError, replicas: u8) -> SetupFailure {
        use jetstream::context::CreateStreamErrorKind as Kind;
        let (may_pass, no_peers) = match e.kind() {
            Kind::TimedOut | Kind::JetStreamUnavailable => (true, false),
            Kind::JetStream(e) => (
                cluster_not_ready(e.error_code()),
                e.error_code() == jetstream::ErrorCode::CLUSTER_NO_PEERS,
            ),
            _ => (false, false),
        };
        let reason = if no_peers {
            format!("{e} (are cluster.nats.replicas = {replicas} servers up and in one cluster?)")
        } else {
            e.to_string()
        };
        SetupFailure { reason, may_pass }
    }

    /// [`SetupFailure::create`] for a stream info request.
    fn info(e: stream::InfoError) -> SetupFailure {
        use jetstream::context::RequestErrorKind as Kind;
        let may_pass = match e.kind() {
            Kind::TimedOut | Kind::NoResponders => true,
            Kind::Other => std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<jetstream::Error>())
                .is_some_and(|e| cluster_not_ready(e.error_code())),
            Kind::InvalidSubject => false,
        };
        SetupFailure {
            reason: e.to_string(),
            may_pass,
        }
    }
}

/// The JetStream error codes of a cluster that cannot serve the request yet.
fn cluster_not_ready(code: jetstream::ErrorCode) -> bool {
    use jetstream::ErrorCode as C;
    [
        C::CLUSTER_NO_PEERS,
        C::CLUSTER_NOT_AVAILABLE,
        C::CLUSTER_NOT_LEADER,
        C::CLUSTER_NOT_ASSIGNED,
        C::STREAM_OFFLINE,
    ]
    .contains(&code)
}

/// One try at creating the stream, or at checking an existing one and setting its max age.
async fn set_up_stream(
    js: &jetstream::Context,
    settings: &LogSettings,
) -> Result<(), SetupFailure> {
    let mut created = js
        .get_or_create_stream(stream::Config {
            name: settings.stream.clone(),
            subjects: vec![subjects(&settings.stream)],
            num_replicas: usize::from(settings.replicas),
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            // Full: refuse new records (the client retries), never drop acknowledged ones.
            discard: stream::DiscardPolicy::New,
            max_age: settings.max_age,
            ..Default::default()
        })
        .await
        .map_err(|e| SetupFailure::create(e, settings.replicas))?;
    let mut info = created.info().await.map_err(SetupFailure::info)?.clone();
    if info.config.max_age != settings.max_age {
        tracing::info!(
            stream = %settings.stream,
            from = ?info.config.max_age,
            to = ?settings.max_age,
            "setting the stream's max age from the snapshot interval"
        );
        let config = stream::Config {
            max_age: settings.max_age,
            ..info.config.clone()
        };
        info = js.update_stream(config).await.map_err(|e| {
            let failure = SetupFailure::create(e, settings.replicas);
            SetupFailure {
                reason: format!("setting its max age: {}", failure.reason),
                ..failure
            }
        })?;
    }
    if info.config.num_replicas != usize::from(settings.replicas) {
        tracing::warn!(
            stream = %settings.stream,
            existing = info.config.num_replicas,
            configured = settings.replicas,
            "the stream exists with another replica count; keeping it"
        );
    }
    Ok(())
}

/// A connection to the stream.
#[derive(Clone)]
pub struct JetStreamLog {
    js: jetstream::Context,
    stream: String,
    shards: u32,
}

impl JetStreamLog {
    /// Connects to any of the servers and creates the stream if it does not exist (an existing
    /// one is used as it is, but for its max age, set to `max_age`; a different replica count
    /// is logged). While no server answers yet, or the servers cannot set the stream up yet
    /// (servers starting together with the node), tries again for up to `setup_timeout` in all.
    pub async fn connect(settings: &LogSettings) -> Result<JetStreamLog, LogError> {
        let urls = settings.urls.join(", ");
        let addrs = settings
            .urls
            .iter()
            .map(|u| u.parse::<ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LogError::Connect {
                urls: urls.clone(),
                reason: e.to_string(),
            })?;
        let mut patience = Patience::new(settings.setup_timeout);
        let client = loop {
            let connected = async_nats::ConnectOptions::new()
                .name(&settings.client_name)
                .connection_timeout(Duration::from_secs(5))
                .connect(addrs.as_slice())
                .await;
            let e = match connected {
                Ok(client) => break client,
                Err(e) => e,
            };
            let reason = e.to_string();
            if !connect_may_pass(e.kind()) {
                return Err(LogError::Connect { urls, reason });
            }
            if !patience
                .wait("cannot connect to NATS yet", &urls, &reason)
                .await
            {
                return Err(LogError::NotReachable {
                    urls,
                    reason,
                    attempts: patience.attempts,
                    tried: patience.started.elapsed(),
                });
            }
        };
        let mut js = jetstream::new(client);
        js.set_timeout(PUBLISH_TIMEOUT);

        while let Err(failure) = set_up_stream(&js, settings).await {
            if !failure.may_pass {
                return Err(LogError::Stream {
                    stream: settings.stream.clone(),
                    reason: failure.reason,
                });
            }
            if !patience
                .wait(
                    "cannot set up the stream yet",
                    &settings.stream,
                    &failure.reason,
                )
                .await
            {
                return Err(LogError::StreamNotReady {
                    stream: settings.stream.clone(),
                    reason: failure.reason,
                    attempts: patience.attempts,
                    tried: patience.started.elapsed(),
                });
            }
        }
        Ok(JetStreamLog {
            js,
            stream: settings.stream.clone(),
            shards: settings.shards,
        })
    }

    /// The subject `org`'s records go to.
    pub fn subject_of(&self, org: &str) -> String {
        subject(&self.stream, shard_of(org, self.shards))
    }

    /// The durable pull consumer `owner-<shard>-<epoch>` of `shard`'s subject, created if
    /// missing: the shard's messages from stream sequence `start` on (the one after the
    /// snapshot the owner restored), at most `OWNER_MAX_ACK_PENDING` delivered and not yet
    /// acknowledged, acknowledged cumulatively (`OwnerAcks`). Each lease epoch has its own, so
    /// a new owner starts where its snapshot ends, never from a previous owner's ack floor; one
    /// left unused for [`OWNER_CONSUMER_IDLE`] is removed by the servers. A message not
    /// acknowledged within [`OWNER_ACK_WAIT`] is delivered again (the store drops it as a
    /// duplicate). Returns how the consumer takes acks: one an older version made keeps its
    /// per-message acks (a consumer's ack policy cannot change).
    pub(crate) async fn owner_consumer(
        &self,
        shard: u32,
        epoch: i64,
        start: u64,
    ) -> Result<(PullConsumer, OwnerAcks), LogError> {
        let name = owner_consumer(shard, epoch);
        let stream = self.stream().await?;
        let mut consumer = stream
            .get_or_create_consumer(&name, self.owner_config(&name, shard, start))
            .await
            .map_err(|e| self.stream_error(format!("consumer {name}: {e}")))?;
        // The epoch's consumer exists already and has delivered past `start`: an owner of this
        // epoch ran here before and ended (its lease lapsed and was renewed). What it consumed
        // after the snapshot this owner restored must come again, not be skipped.
        let delivered = consumer.cached_info().delivered.stream_sequence;
        if delivered >= start {
            tracing::info!(
                consumer = name.as_str(),
                delivered,
                start,
                "the epoch's consumer is past where this owner starts; made again from there"
            );
            consumer = self.reset_owner_consumer(shard, epoch, start).await?;
        }
        let acks = match consumer.cached_info().config.ack_policy {
            AckPolicy::All => OwnerAcks::Cumulative,
            _ => OwnerAcks::PerMessage,
        };
        Ok((consumer, acks))
    }

    /// Makes `owner-<shard>-<epoch>` again from stream sequence `start` (one past the owner's
    /// ack floor): after a delivery the owner never received, which a cumulative ack must not
    /// pass; or for an owner of the same epoch started again from its snapshot.
    /// What it had stored past `start` comes again and the store drops it.
    pub async fn reset_owner_consumer(
        &self,
        shard: u32,
        epoch: i64,
        start: u64,
    ) -> Result<PullConsumer, LogError> {
        let name = owner_consumer(shard, epoch);
        let stream = self.stream().await?;
        if let Err(e) = stream.delete_consumer(&name).await {
            tracing::debug!(consumer = name.as_str(), error = %e, "consumer not deleted");
        }
        stream
            .create_consumer(self.owner_config(&name, shard, start))
            .await
            .map_err(|e| self.stream_error(format!("consumer {name}: {e}")))
    }

    fn owner_config(&self, name: &str, shard: u32, start: u64) -> pull::Config {
        let deliver_policy = if start > 1 {
            DeliverPolicy::ByStartSequence {
                start_sequence: start,
            }
        } else {
            DeliverPolicy::All
        };
        pull::Config {
            durable_name: Some(name.to_string()),
            filter_subject: subject(&self.stream, shard),
            deliver_policy,
            ack_policy: AckPolicy::All,
            ack_wait: OWNER_ACK_WAIT,
            max_ack_pending: OWNER_MAX_ACK_PENDING,
            inactive_threshold: OWNER_CONSUMER_IDLE,
            ..Default::default()
        }
    }

    async fn stream(&self) -> Result<stream::Stream, LogError> {
        self.js
            .get_stream(&self.stream)
            .await
            .map_err(|e| self.stream_error(e.to_string()))
    }

    fn stream_error(&self, reason: String) -> LogError {
        LogError::Stream {
            stream: self.stream.clone(),
            reason,
        }
    }

    /// Appends `records` (each with its id set): all published at once, then every ack awaited.
    /// An error means some may be in the stream and some not; resending the batch is safe (same
    /// message ids).
    pub async fn append(&self, records: &[AuditRecord]) -> Result<Vec<Appended>, LogError> {
        if let Some(record) = records
            .iter()
            .find(|r| r.id.as_deref().is_none_or(str::is_empty))
        {
            return Err(LogError::Encode {
                org: record.org_id.clone(),
                id: String::new(),
                reason: "a record without an id cannot be deduplicated".into(),
            });
        }
        let mut appended: Vec<Option<Appended>> = records.iter().map(|_| None).collect();
        let mut todo: Vec<usize> = (0..records.len()).collect();
        let patience = Instant::now() + NO_STREAM_PATIENCE;
        let mut pause = Duration::from_millis(10);
        loop {
            let mut pending = Vec::with_capacity(todo.len());
            for &i in &todo {
                let record = &records[i];
                let subject = self.subject_of(&record.org_id);
                let mut headers = HeaderMap::new();
                headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id(record).as_str());
                headers.insert(ORG_HEADER, record.org_id.as_str());
                let ack = self
                    .js
                    .publish_with_headers(subject.clone(), headers, record.canonical_json().into())
                    .await
                    .map_err(|e| LogError::Publish {
                        subject: subject.clone(),
                        reason: e.to_string(),
                    })?;
                pending.push((i, subject, ack));
            }
            let mut missed = Vec::new();
            for (i, subject, ack) in pending {
                match ack.await {
                    Ok(ack) => {
                        appended[i] = Some(if ack.duplicate {
                            Appended::Duplicate
                        } else {
                            Appended::Stored { seq: ack.sequence }
                        });
                    }
                    Err(e)
                        if e.kind() == PublishErrorKind::StreamNotFound
                            && Instant::now() < patience =>
                    {
                        missed.push(i);
                    }
                    Err(e) => {
                        return Err(LogError::Publish {
                            subject,
                            reason: e.to_string(),
                        });
                    }
                }
            }
            if missed.is_empty() {
                break;
            }
            tracing::debug!(
                records = missed.len(),
                "no stream answered for their subject yet; publishing them again"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
            todo = missed;
        }
        Ok(appended.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::context::CreateStreamErrorKind;
    use codestax_harness::NatsCluster;

    fn records(org: &str, ids: std::ops::Range<usize>) -> Vec<AuditRecord> {
        ids.map(|i| {
            serde_json::from_value(serde_json::json!({
                "org_id": org, "id": format!("r-{i}"), "action": "auth.login",
                "actor": {"id": "ada"}, "time": "2026-12-04T12:00:00Z",
            }))
            .unwrap()
        })
        .collect()
    }

    fn ids(messages: &[jetstream::Message]) -> Vec<String> {
        messages
            .iter()
            .map(|m| {
                serde_json::from_slice::<AuditRecord>(&m.payload)
                    .unwrap()
                    .id
                    .unwrap()
            })
            .collect()
    }

    /// A shard's messages reach its owner as soon as they are in the stream: a fetch does not sit
    /// on the messages it has until its expiry (which left each record up to a whole expiry
    /// away from being stored, so that reads missed records acknowledged 2 s before). It waits
    /// only while the shard is idle, and then hands over the first message as it comes.
    #[test]
    fn an_owner_fetch_hands_over_what_is_there_at_once_and_waits_only_when_idle() {
        // Started outside the runtime: the harness waits for the servers with blocking calls.
        let dir = tempfile::tempdir().unwrap();
        let Some(nats) = NatsCluster::start_or_skip("owner fetch", dir.path()) else {
            return;
        };
        runtime().block_on(fetches(&nats));
    }

    async fn fetches(nats: &NatsCluster) {
        let log = JetStreamLog::connect(&settings(nats, "FETCH_TEST", Duration::from_secs(30)))
            .await
            .unwrap();
        let (consumer, acks) = log.owner_consumer(0, 1, 1).await.unwrap();
        assert_eq!(acks, OwnerAcks::Cumulative);
        // Far above what any of the answers below may take, so waiting it out shows.
        let wait = Duration::from_secs(6);

        // Idle: nothing within the wait, then an empty answer.
        let asked = Instant::now();
        let idle = Duration::from_millis(300);
        assert!(owner_fetch(&consumer, 1000, idle).await.unwrap().is_empty());
        assert!(asked.elapsed() >= idle, "{:?}", asked.elapsed());

        // Messages in the stream: handed over at once, all of them, not at the expiry.
        log.append(&records("acme", 0..5)).await.unwrap();
        let asked = Instant::now();
        let got = owner_fetch(&consumer, 1000, wait).await.unwrap();
        let took = asked.elapsed();
        assert_eq!(ids(&got), ["r-0", "r-1", "r-2", "r-3", "r-4"]);
        assert!(took < wait / 3, "5 waiting messages took {took:?}");
        assert_eq!(got.last().unwrap().info().unwrap().pending, 0);

        // Idle, then a batch published while the pull waits: handed over as it comes, with
        // what came behind its first message, in order.
        let publisher = {
            let log = log.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                log.append(&records("acme", 5..10)).await.unwrap();
            })
        };
        let asked = Instant::now();
        let mut got = owner_fetch(&consumer, 1000, wait).await.unwrap();
        let took = asked.elapsed();
        assert!(!got.is_empty());
        assert!(
            took < wait / 3,
            "a message published 0.5 s into the wait took {took:?}"
        );
        publisher.await.unwrap();
        while got.len() < 5 {
            let more = owner_fetch(&consumer, 1000, wait).await.unwrap();
            assert!(!more.is_empty(), "the rest of the batch never came");
            got.extend(more);
        }
        assert_eq!(ids(&got), ["r-5", "r-6", "r-7", "r-8", "r-9"]);

        // No more than `max` at a time; the rest at the next fetch.
        log.append(&records("acme", 10..13)).await.unwrap();
        let got = owner_fetch(&consumer, 2, wait).await.unwrap();
        assert_eq!(ids(&got), ["r-10", "r-11"]);
        assert_eq!(got[1].info().unwrap().pending, 1);
        let got = owner_fetch(&consumer, 2, wait).await.unwrap();
        assert_eq!(ids(&got), ["r-12"]);

        // An owner of the same epoch started again from a snapshot before what the epoch's
        // consumer delivered (and had acknowledged) gets it all again, from its start.
        got[0].ack().await.unwrap();
        let (again, _) = log.owner_consumer(0, 1, 11).await.unwrap();
        let got = owner_fetch(&again, 1000, wait).await.unwrap();
        assert_eq!(ids(&got), ["r-10", "r-11", "r-12"]);
        // One that starts past what was delivered keeps the consumer.
        log.append(&records("acme", 13..14)).await.unwrap();
        let (kept, _) = log.owner_consumer(0, 1, 14).await.unwrap();
        assert_eq!(kept.cached_info().delivered.stream_sequence, 13);
        let got = owner_fetch(&kept, 1000, wait).await.unwrap();
        assert_eq!(ids(&got), ["r-13"]);
    }

    /// A failed set-up is tried again when the cluster is not ready or did not answer, not when
    /// the servers refused the stream itself.
    #[test]
    fn setup_failures_that_may_pass() {
        use jetstream::context::{
            CreateStreamError, CreateStreamErrorKind as Create, RequestError,
            RequestErrorKind as Request,
        };
        let server = |code: u64| -> jetstream::Error {
            serde_json::from_value(serde_json::json!({
                "code": 400, "err_code": code, "description": "from the server",
            }))
            .unwrap()
        };
        let create = |kind| SetupFailure::create(CreateStreamError::new(kind), 3).may_pass;
        // No suitable peers, system temporarily unavailable, cannot handle the request now.
        for code in [10005, 10008, 10009] {
            assert!(create(Create::JetStream(server(code))), "{code}");
        }
        assert!(create(Create::TimedOut));
        assert!(create(Create::JetStreamUnavailable));
        // Subjects overlap with another stream; the name in use with another config.
        for code in [10065, 10058] {
            assert!(!create(Create::JetStream(server(code))), "{code}");
        }
        assert!(!create(Create::InvalidStreamName));

        let info = |e| SetupFailure::info(e).may_pass;
        assert!(info(RequestError::with_source(
            Request::Other,
            server(10008)
        )));
        assert!(info(RequestError::new(Request::TimedOut)));
        assert!(info(RequestError::new(Request::NoResponders)));
        // Stream not found.
        assert!(!info(RequestError::with_source(
            Request::Other,
            server(10059)
        )));
    }

    /// A publish nobody answers ("no stream found for given subject": a stream just created whose
    /// interest has not reached this client's server, or one electing a leader) is sent again
    /// for [`NO_STREAM_PATIENCE`], not failed at once: with its stream deleted under a connected
    /// log and created again 300 ms later, a batch lands, each record once. A stream that stays
    /// away fails the append after the patience, naming why.
    #[test]
    fn a_publish_nobody_answers_is_sent_again_until_the_stream_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let Some(nats) = NatsCluster::start_or_skip("publish again", dir.path()) else {
            return;
        };
        runtime().block_on(async {
            let settings = settings(&nats, "AGAIN_TEST", Duration::from_secs(30));
            let log = JetStreamLog::connect(&settings).await.unwrap();
            log.js.delete_stream("AGAIN_TEST").await.unwrap();
            let again = tokio::spawn({
                let settings = settings.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    JetStreamLog::connect(&settings).await.unwrap()
                }
            });
            let started = Instant::now();
            let appended = log.append(&records("acme", 0..3)).await.unwrap();
            assert!(
                started.elapsed() >= Duration::from_millis(250),
                "the stream was away: {:?}",
                started.elapsed()
            );
            assert_eq!(
                appended,
                [
                    Appended::Stored { seq: 1 },
                    Appended::Stored { seq: 2 },
                    Appended::Stored { seq: 3 }
                ]
            );
            again.await.unwrap();

            log.js.delete_stream("AGAIN_TEST").await.unwrap();
            let started = Instant::now();
            let error = log.append(&records("acme", 3..4)).await.unwrap_err();
            let took = started.elapsed();
            assert!(error.to_string().contains("no stream found"), "{error}");
            assert!(
                took >= NO_STREAM_PATIENCE && took < NO_STREAM_PATIENCE + Duration::from_secs(5),
                "{took:?}"
            );
        });
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn settings(nats: &NatsCluster, stream: &str, setup_timeout: Duration) -> LogSettings {
        LogSettings {
            urls: nats.urls(),
            stream: stream.into(),
            replicas: 3,
            shards: 1,
            client_name: format!("{stream}-test"),
            max_age: Duration::from_secs(3600),
            setup_timeout,
        }
    }

    /// Creates `config` with a client of its own.
    async fn create_directly(
        nats: &NatsCluster,
        config: stream::Config,
    ) -> Result<(), jetstream::context::CreateStreamError> {
        let client = async_nats::connect(nats.urls()[0].as_str()).await.unwrap();
        jetstream::new(client)
            .create_stream(config)
            .await
            .map(|_| ())
    }

    /// A cluster that cannot place the stream yet (CI once saw `no suitable peers for placement,
    /// peer offline (10005)` from a cluster reported ready) does not fail the start: the node
    /// tries again until the cluster can place it.
    #[test]
    fn stream_setup_waits_until_the_cluster_can_place_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let Some(mut nats) = NatsCluster::start_or_skip("stream setup waits", dir.path()) else {
            return;
        };
        // The fault: every server killed, two of the three started again. They elect a meta
        // leader, but it has not heard from the third since it started, so an R3 stream has
        // nowhere to go until the third is back (10005, "miscellaneous issue": the leader knows
        // nothing of that peer). Killing one of three running servers is not enough: the leader
        // still places a replica on a peer it has heard from.
        for i in 0..nats.len() {
            nats.kill(i);
        }
        nats.restart_some(&[0, 1]).unwrap();
        let rt = runtime();
        let probe = stream::Config {
            name: "PLACEMENT_PROBE".into(),
            subjects: vec!["placement-probe".into()],
            num_replicas: 3,
            ..Default::default()
        };
        let refused = rt.block_on(create_directly(&nats, probe));
        let no_peers = |e: &jetstream::context::CreateStreamError| {
            matches!(e.kind(), CreateStreamErrorKind::JetStream(e)
                if e.error_code() == jetstream::ErrorCode::CLUSTER_NO_PEERS)
        };
        assert!(
            refused.as_ref().is_err_and(no_peers),
            "the fault is not injected: an R3 stream on 2 of 3 servers gave {refused:?}"
        );

        // Past its patience, the node gives up with the servers' error and how long it tried.
        let patience = Duration::from_secs(2);
        let err = connect_error(&rt, &settings(&nats, "SETUP_TEST", patience));
        let LogError::StreamNotReady {
            reason,
            attempts,
            tried,
            ..
        } = &err
        else {
            panic!("{err}");
        };
        assert!(reason.contains("no suitable peers"), "{err}");
        assert!(*attempts > 1 && *tried >= patience, "{err}");

        // Within its patience, it sets the stream up once the third server is back.
        let connecting = {
            let settings = settings(&nats, "SETUP_TEST", Duration::from_secs(30));
            rt.spawn(async move {
                let started = Instant::now();
                (JetStreamLog::connect(&settings).await, started.elapsed())
            })
        };
        std::thread::sleep(Duration::from_secs(3));
        if connecting.is_finished() {
            let (ended, took) = rt.block_on(connecting).unwrap();
            panic!(
                "connect ended after {took:?}, while the cluster could not place the stream: {:?}",
                ended.map(|_| ())
            );
        }
        nats.restart(2).unwrap();
        let (connected, took) = rt.block_on(connecting).unwrap();
        let log = connected.unwrap_or_else(|e| panic!("after {took:?}: {e}"));
        rt.block_on(async {
            let info = log.stream().await.unwrap().info().await.unwrap().clone();
            assert_eq!(info.config.num_replicas, 3);
        });
        assert_takes_records(&rt, &log);
    }

    /// The error `JetStreamLog::connect` with `settings` ends in.
    fn connect_error(rt: &tokio::runtime::Runtime, settings: &LogSettings) -> LogError {
        rt.block_on(JetStreamLog::connect(settings))
            .map(|_| ())
            .unwrap_err()
    }

    /// `log` stores what is appended to it.
    fn assert_takes_records(rt: &tokio::runtime::Runtime, log: &JetStreamLog) {
        let appended = rt.block_on(log.append(&records("acme", 0..2))).unwrap();
        assert!(
            appended
                .iter()
                .all(|a| matches!(a, Appended::Stored { .. }))
        );
    }

    /// A node started before any nats-server listens does not fail its start: it tries to
    /// connect again, within the same patience as the stream's set-up, and gives up past it
    /// with how long it tried.
    #[test]
    fn connect_waits_for_servers_not_listening_yet() {
        let dir = tempfile::tempdir().unwrap();
        let Some(mut nats) = NatsCluster::start_or_skip("connect waits", dir.path()) else {
            return;
        };
        for i in 0..nats.len() {
            nats.kill(i);
        }
        let rt = runtime();
        let patience = Duration::from_secs(1);
        let err = connect_error(&rt, &settings(&nats, "CONNECT_TEST", patience));
        let LogError::NotReachable {
            attempts, tried, ..
        } = &err
        else {
            panic!("{err}");
        };
        assert!(*attempts > 1 && *tried >= patience, "{err}");
        assert!(err.to_string().contains("setup_timeout"), "{err}");

        let connecting = {
            let settings = settings(&nats, "CONNECT_TEST", Duration::from_secs(60));
            rt.spawn(async move { JetStreamLog::connect(&settings).await })
        };
        std::thread::sleep(Duration::from_secs(2));
        assert!(!connecting.is_finished(), "connect ended with no server up");
        nats.restart_some(&[0, 1, 2]).unwrap();
        let log = rt.block_on(connecting).unwrap().unwrap();
        assert_takes_records(&rt, &log);
    }

    /// More replicas than the cluster has servers is refused as "no suitable peers" too, which
    /// a start also gives while a peer is still away: past the patience, the error asks about
    /// the replica count.
    #[test]
    fn more_replicas_than_servers_fails_past_the_patience_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let Some(nats) = NatsCluster::start_or_skip("too many replicas", dir.path()) else {
            return;
        };
        let settings = LogSettings {
            replicas: 5,
            ..settings(&nats, "REPLICAS_TEST", Duration::from_secs(1))
        };
        let err = connect_error(&runtime(), &settings);
        assert!(matches!(err, LogError::StreamNotReady { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("no suitable peers"), "{text}");
        assert!(text.contains("cluster.nats.replicas = 5"), "{text}");
    }

    #[test]
    fn only_connection_failures_that_can_pass_are_tried_again() {
        use async_nats::ConnectErrorKind as Kind;
        for kind in [Kind::Io, Kind::TimedOut, Kind::Dns, Kind::MaxReconnects] {
            assert!(connect_may_pass(kind), "{kind}");
        }
        for kind in [
            Kind::ServerParse,
            Kind::Authentication,
            Kind::AuthorizationViolation,
            Kind::Tls,
        ] {
            assert!(!connect_may_pass(kind), "{kind}");
        }
    }

    /// A stream the servers will never take as configured fails the start at once, not after
    /// the setup patience: here another stream has its subjects.
    #[test]
    fn stream_setup_fails_at_once_on_a_refusal_that_cannot_pass() {
        let dir = tempfile::tempdir().unwrap();
        let Some(nats) = NatsCluster::start_or_skip("stream setup refused", dir.path()) else {
            return;
        };
        let rt = runtime();
        let other = stream::Config {
            name: "OTHER".into(),
            subjects: vec![subjects("TAKEN")],
            ..Default::default()
        };
        rt.block_on(create_directly(&nats, other)).unwrap();
        let started = Instant::now();
        let err = connect_error(&rt, &settings(&nats, "TAKEN", Duration::from_secs(30)));
        let took = started.elapsed();
        assert!(matches!(err, LogError::Stream { .. }), "{err}");
        assert!(err.to_string().contains("subjects overlap"), "{err}");
        assert!(took < Duration::from_secs(5), "refused after {took:?}");
    }
}
