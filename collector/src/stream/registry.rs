//! [`Streams`]: every stream of every org, each with its delivery task, and the operations the
//! API and the server call: create, change, pause, delete, replay, test, and stop them all. One
//! lock orders the changes; a stream's task is stopped (and waited for) before its definition or
//! cursor changes, so a task never writes a cursor over a replay.

use super::allow::Allowlist;
use super::definition::{DefinitionError, Secrets, Start, StreamDef, StreamInput, StreamPatch};
use super::delivery::{self, Deps};
use super::destination::{SendError, Sender, TestAnswer};
use super::shared::{CursorStore, LocalCursors, SharedError, SharedStreams, recording};
use super::status::{State, Status, StatusCell};
use super::store::{Cursor, StoreError};
use chrono::{DateTime, Utc};
use codestax_storage::PreparedFile;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest a `POST …/streams/{id}/test` waits for the destination's answer.
const TEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Why an operation on a stream was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("no such stream")]
    NotFound,
    #[error(
        "stream {0} is declared in the collector's configuration and cannot be changed through the API"
    )]
    Declared(String),
    #[error("{0}")]
    Invalid(#[from] DefinitionError),
    #[error("destination refused: {0}")]
    Refused(String),
    #[error("the org has {0} streams, the most allowed")]
    TooMany(usize),
    #[error("storing the streams failed: {0}")]
    Store(#[from] StoreError),
    /// A cursor (or, in cluster mode, a definition) could not be read or written.
    #[error("the stream's state: {0}")]
    Shared(#[from] SharedError),
    /// Cluster mode: this node does not deliver the org's streams now (its shard moved).
    #[error("this node does not hold the org's shard now")]
    NotOwner,
}

/// Most streams an org may have.
pub const MAX_STREAMS_PER_ORG: usize = 20;

/// A stream and its status, as the API shows it (no secrets).
#[derive(Debug, Clone, Serialize)]
pub struct StreamView {
    #[serde(flatten)]
    pub def: StreamDef,
    /// Whether an HMAC secret or a HEC token is set (neither is ever shown).
    pub has_secret: bool,
    /// The names of the extra headers (their values are never shown).
    pub header_names: Vec<String>,
    pub status: Status,
}

/// A `/test` answer: status and timing only.
#[derive(Debug, Clone, Serialize)]
pub struct TestReport {
    pub accepted: bool,
    /// The HTTP status (https), absent for syslog.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy)]
pub enum ReplayFrom {
    Seq(u64),
    Time(DateTime<Utc>),
}

struct Entry {
    def: StreamDef,
    secrets: Secrets,
    status: Arc<StatusCell>,
    task: Option<(CancellationToken, JoinHandle<()>)>,
    /// Where its cursor is kept (in a cluster: fenced by the lease it started under).
    cursors: Arc<dyn CursorStore>,
}

/// Every stream (in a cluster: those of the shards this node delivers). Cheap to clone.
#[derive(Clone)]
pub struct Streams {
    deps: Deps,
    entries: Arc<Mutex<BTreeMap<(String, String), Entry>>>,
    /// The cursor files of a single node.
    local: Arc<dyn CursorStore>,
    /// Cluster mode: definitions and cursors in the metastore.
    shared: Option<Arc<dyn SharedStreams>>,
    /// The streams of `[[streams.declared]]`: in a cluster, started by [`Streams::follow`] on
    /// the owner of their org's shard.
    declared: Arc<Vec<(StreamDef, Secrets)>>,
}

impl Streams {
    /// Loads the stored streams and the declared ones and starts their tasks. With `shared`
    /// (cluster mode) it starts none: [`Streams::follow`] starts those of the shards this node
    /// owns, from the metastore; the data dir's `definitions.json` is not read here (the
    /// node's first cluster start offered it: `cluster::offer_streams`).
    pub async fn start(
        deps: Deps,
        declared: &[codestax_config::DeclaredStream],
        shared: Option<Arc<dyn SharedStreams>>,
    ) -> Result<Streams, StreamError> {
        let mut all = if shared.is_some() {
            Vec::new()
        } else {
            let store = deps.store.clone();
            tokio::task::spawn_blocking(move || store.load())
                .await
                .map_err(|e| StreamError::Refused(e.to_string()))??
        };
        let mut declared_defs = Vec::new();
        for d in declared {
            let input = StreamInput::from_declared(d).map_err(|e| DefinitionError {
                field: format!("streams.declared {}/{}: {}", d.org, d.id, e.field),
                message: e.message,
            })?;
            if all.iter().any(|(s, _)| s.org == d.org && s.id == d.id) {
                tracing::warn!(org = %d.org, stream = %d.id, "a declared stream has the id of a stream made through the API; the declared one replaces it");
            }
            all.retain(|(s, _)| !(s.org == d.org && s.id == d.id));
            declared_defs.push((
                StreamDef {
                    id: d.id.clone(),
                    org: d.org.clone(),
                    name: input.name,
                    format: input.format,
                    start: input.start,
                    filters: input.filters,
                    destination: input.destination,
                    declared: true,
                    paused: false,
                    created_at: Utc::now(),
                },
                input.secrets,
            ));
        }
        let streams = Streams {
            local: Arc::new(LocalCursors(deps.store.clone())),
            deps,
            entries: Arc::new(Mutex::new(BTreeMap::new())),
            shared,
            declared: Arc::new(declared_defs.clone()),
        };
        if streams.shared.is_some() {
            return Ok(streams);
        }
        all.extend(declared_defs);
        let mut entries = streams.entries.lock().await;
        for (def, secrets) in all {
            let (org, id) = (def.org.clone(), def.id.clone());
            let cursors = streams.local.clone();
            if read_cursor(cursors.as_ref(), &org, &id).await?.is_none() {
                let cursor = streams.initial_cursor(&def);
                cursors.write(&org, &id, &cursor).await?;
            }
            let mut entry = Entry {
                status: Arc::new(StatusCell::new(State::Healthy, 0)),
                def,
                secrets,
                task: None,
                cursors,
            };
            streams.spawn(&mut entry);
            entries.insert((org, id), entry);
        }
        drop(entries);
        Ok(streams)
    }

    /// Cluster mode: makes the running streams of the orgs `owns` matches (one shard's) those
    /// `load` reads from the metastore plus the declared ones, each delivering with `cursors`
    /// (fenced by the lease it was made for): new streams start, changed ones restart, gone ones
    /// stop. `load` runs with the changes of the API locked out, so a change made here between
    /// the read and its use is never undone.
    pub async fn follow(
        &self,
        owns: impl Fn(&str) -> bool,
        cursors: Arc<dyn CursorStore>,
        load: impl Future<Output = Result<Vec<(StreamDef, Secrets)>, StreamError>>,
    ) -> Result<(), StreamError> {
        let mut entries = self.entries.lock().await;
        let declared = |org: &str, id: &str| {
            self.declared
                .iter()
                .any(|(d, _)| d.org == org && d.id == id)
        };
        let mut want = load.await?;
        want.retain(|(d, _)| owns(&d.org) && !declared(&d.org, &d.id));
        want.extend(self.declared.iter().filter(|(d, _)| owns(&d.org)).cloned());
        let gone: Vec<(String, String)> = entries
            .keys()
            .filter(|(org, id)| {
                owns(org) && !want.iter().any(|(d, _)| d.org == *org && d.id == *id)
            })
            .cloned()
            .collect();
        for k in gone {
            if let Some(mut e) = entries.remove(&k) {
                self.stop_task(&mut e).await;
            }
        }
        for (def, secrets) in want {
            let k = key(&def.org, &def.id);
            if entries
                .get(&k)
                .is_some_and(|e| e.def == def && e.secrets == secrets)
            {
                continue;
            }
            let status = match entries.remove(&k) {
                Some(mut old) => {
                    self.stop_task(&mut old).await;
                    old.status
                }
                None => Arc::new(StatusCell::new(State::Healthy, 0)),
            };
            if read_cursor(cursors.as_ref(), &def.org, &def.id)
                .await?
                .is_none()
            {
                let cursor = self.initial_cursor(&def);
                cursors.write(&def.org, &def.id, &cursor).await?;
            }
            let mut entry = Entry {
                def,
                secrets,
                status,
                task: None,
                cursors: cursors.clone(),
            };
            self.spawn(&mut entry);
            entries.insert(k, entry);
        }
        Ok(())
    }

    /// Cluster mode: stops and forgets the streams of the orgs `owns` matches (their shard's
    /// lease is gone); how many.
    pub async fn release(&self, owns: impl Fn(&str) -> bool) -> usize {
        let mut entries = self.entries.lock().await;
        let keys: Vec<(String, String)> = entries.keys().filter(|k| owns(&k.0)).cloned().collect();
        for k in &keys {
            if let Some(mut e) = entries.remove(k) {
                self.stop_task(&mut e).await;
            }
        }
        keys.len()
    }

    /// In a cluster, refuses while `org`'s streams are not loaded here (its shard just taken
    /// over, its streams not yet read): never an answer from an empty registry.
    fn check_here(&self, org: &str) -> Result<(), StreamError> {
        match &self.shared {
            Some(shared) if !shared.delivers(org) => Err(StreamError::NotOwner),
            _ => Ok(()),
        }
    }

    /// Where `org`'s cursors are written here; in a cluster, only while this node owns the
    /// org's shard.
    fn cursors_for(&self, org: &str) -> Result<Arc<dyn CursorStore>, StreamError> {
        match &self.shared {
            None => Ok(self.local.clone()),
            Some(shared) => shared.cursors(org).ok_or(StreamError::NotOwner),
        }
    }

    /// Fails unless a change can be stored now (in a cluster: the metastore answers).
    pub async fn check_writable(&self) -> Result<(), StreamError> {
        if let Some(shared) = &self.shared {
            shared.check_writable().await?;
        }
        Ok(())
    }

    /// A new stream id: 16 hex digits.
    pub fn new_id() -> String {
        let mut b = [0u8; 8];
        rand::fill(&mut b[..]);
        hex::encode(b)
    }

    pub async fn list(&self, org: &str) -> Result<Vec<StreamView>, StreamError> {
        self.check_here(org)?;
        let entries = self.entries.lock().await;
        Ok(entries
            .values()
            .filter(|e| e.def.org == org)
            .map(|e| self.view(e))
            .collect())
    }

    pub async fn get(&self, org: &str, id: &str) -> Result<StreamView, StreamError> {
        self.check_here(org)?;
        let entries = self.entries.lock().await;
        entries
            .get(&key(org, id))
            .map(|e| self.view(e))
            .ok_or(StreamError::NotFound)
    }

    /// Every stream's status, for the metrics: (org, id, status).
    pub async fn statuses(&self) -> Vec<(String, String, Status)> {
        let entries = self.entries.lock().await;
        entries
            .values()
            .map(|e| {
                let v = self.view(e);
                (e.def.org.clone(), e.def.id.clone(), v.status)
            })
            .collect()
    }

    /// Checks a new stream without creating it (the API records the change first).
    pub async fn check_new(&self, org: &str, input: &StreamInput) -> Result<(), StreamError> {
        self.check_here(org)?;
        let count = self
            .entries
            .lock()
            .await
            .values()
            .filter(|e| e.def.org == org)
            .count();
        if count >= MAX_STREAMS_PER_ORG {
            return Err(StreamError::TooMany(count));
        }
        self.cursors_for(org)?;
        self.check_destination(&input.destination).await?;
        self.check_writable().await
    }

    /// Creates stream `id` of `org`, `record` making its audit entry durable in between. On a
    /// single node its first cursor and the next `definitions.json` are written (fsynced) first
    /// and the definitions put in place only once it is recorded: a full disk refuses it before
    /// it is recorded, and a refused record (`Ok(Err(_))`) leaves the streams as they were. In a
    /// cluster it is written to the metastore in a transaction, recorded, then committed
    /// ([`SharedStreams::create`]).
    pub async fn create<E: Send>(
        &self,
        org: &str,
        id: &str,
        input: StreamInput,
        record: impl Future<Output = Result<(), E>> + Send,
    ) -> Result<Result<StreamView, E>, StreamError> {
        let def = StreamDef {
            id: id.to_string(),
            org: org.to_string(),
            name: input.name,
            format: input.format,
            start: input.start,
            filters: input.filters,
            destination: input.destination,
            declared: false,
            paused: false,
            created_at: codestax_common::time::truncate_to_micros(Utc::now()),
        };
        let cursors = self.cursors_for(org)?;
        let mut entries = self.entries.lock().await;
        let cursor = self.initial_cursor(&def);
        let mut entry = Entry {
            def,
            secrets: input.secrets,
            status: Arc::new(StatusCell::new(State::Healthy, 0)),
            task: None,
            cursors,
        };
        if let Some(shared) = &self.shared {
            let mut refused = None;
            let recorded = recording(record, &mut refused);
            shared
                .create(&entry.def, &entry.secrets, &cursor, recorded)
                .await?;
            if let Some(e) = refused {
                return Ok(Err(e));
            }
        } else {
            let made = async {
                self.write_local_cursor(org, id, &cursor).await?;
                let prepared = self.prepare(&entries, Some(&entry)).await?;
                if let Err(e) = record.await {
                    return Ok(Err(e));
                }
                self.commit(prepared).await?;
                Ok::<_, StreamError>(Ok(()))
            }
            .await;
            if !matches!(made, Ok(Ok(()))) {
                self.deps.store.remove_cursor(org, id);
            }
            if let Err(e) = made? {
                return Ok(Err(e));
            }
        }
        self.spawn(&mut entry);
        let view = self.view(&entry);
        entries.insert(key(org, id), entry);
        Ok(Ok(view))
    }

    /// Checks a change without making it: the stream exists, is not declared, and its new
    /// destination is allowed.
    pub async fn check_patch(
        &self,
        org: &str,
        id: &str,
        patch: &StreamPatch,
    ) -> Result<StreamView, StreamError> {
        let view = self.get(org, id).await?;
        if view.def.declared {
            return Err(StreamError::Declared(id.into()));
        }
        if let Some((d, _)) = &patch.destination {
            self.check_destination(d).await?;
        }
        self.check_writable().await?;
        Ok(view)
    }

    /// Applies a change, recorded by `record` as [`Streams::create`] is; the stream's task
    /// restarts with it.
    pub async fn patch<E: Send>(
        &self,
        org: &str,
        id: &str,
        patch: StreamPatch,
        record: impl Future<Output = Result<(), E>> + Send,
    ) -> Result<Result<StreamView, E>, StreamError> {
        let mut entries = self.entries.lock().await;
        let entry = entries.get(&key(org, id)).ok_or(StreamError::NotFound)?;
        if entry.def.declared {
            return Err(StreamError::Declared(id.into()));
        }
        let mut new = placeholder(entry);
        if let Some(n) = patch.name {
            new.def.name = n;
        }
        if let Some(f) = patch.format {
            new.def.format = f;
        }
        if let Some(f) = patch.filters {
            new.def.filters = f;
        }
        if let Some((d, s)) = patch.destination {
            new.def.destination = d;
            new.secrets = s;
        }
        if let Some(p) = patch.paused {
            new.def.paused = p;
        }
        match &self.shared {
            Some(shared) => {
                let mut refused = None;
                let recorded = recording(record, &mut refused);
                shared.update(&new.def, &new.secrets, recorded).await?;
                if let Some(e) = refused {
                    return Ok(Err(e));
                }
            }
            None => {
                let prepared = self.prepare(&entries, Some(&new)).await?;
                if let Err(e) = record.await {
                    return Ok(Err(e));
                }
                self.commit(prepared).await?;
            }
        }
        let entry = entries.get_mut(&key(org, id)).expect("looked up above");
        self.stop_task(entry).await;
        entry.def = new.def;
        entry.secrets = new.secrets;
        self.spawn(entry);
        Ok(Ok(self.view(entry)))
    }

    /// Deletes a stream (not a declared one) and its cursor, recorded by `record` as
    /// [`Streams::create`] is.
    pub async fn delete<E: Send>(
        &self,
        org: &str,
        id: &str,
        record: impl Future<Output = Result<(), E>> + Send,
    ) -> Result<Result<StreamDef, E>, StreamError> {
        let mut entries = self.entries.lock().await;
        let entry = entries.get(&key(org, id)).ok_or(StreamError::NotFound)?;
        if entry.def.declared {
            return Err(StreamError::Declared(id.into()));
        }
        let mut entry = entries.remove(&key(org, id)).expect("looked up above");
        // Stopped first: its task cannot write the cursor again after it is deleted.
        self.stop_task(&mut entry).await;
        let removed = async {
            match &self.shared {
                Some(shared) => {
                    let mut refused = None;
                    shared
                        .remove(org, id, recording(record, &mut refused))
                        .await?;
                    if let Some(e) = refused {
                        return Ok(Err(e));
                    }
                }
                None => {
                    let prepared = self.prepare(&entries, None).await?;
                    if let Err(e) = record.await {
                        return Ok(Err(e));
                    }
                    self.commit(prepared).await?;
                }
            }
            Ok::<_, StreamError>(Ok(()))
        }
        .await;
        let refused = match removed {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(Ok(Err(e))),
            Err(e) => Some(Err(e)),
        };
        if let Some(refused) = refused {
            // Not deleted: it runs on.
            self.spawn(&mut entry);
            entries.insert(key(org, id), entry);
            return refused;
        }
        if self.shared.is_none() {
            self.deps.store.remove_cursor(org, id);
        }
        Ok(Ok(entry.def))
    }

    /// Re-delivers from `from`: the cursor is set back (durably) and the task restarts.
    pub async fn replay(
        &self,
        org: &str,
        id: &str,
        from: ReplayFrom,
    ) -> Result<StreamView, StreamError> {
        let mut entries = self.entries.lock().await;
        let entry = entries
            .get_mut(&key(org, id))
            .ok_or(StreamError::NotFound)?;
        self.stop_task(entry).await;
        let cursors = entry.cursors.clone();
        let old = match read_cursor(cursors.as_ref(), org, id).await {
            Ok(c) => c.unwrap_or_default(),
            Err(e) => {
                self.spawn(entry);
                return Err(e);
            }
        };
        let mut cursor = match from {
            ReplayFrom::Seq(seq) => Cursor::at(seq.saturating_sub(1)),
            ReplayFrom::Time(t) => Cursor::from_time(t),
        };
        cursor.expired_records = old.expired_records;
        cursor.truncated_records = old.truncated_records;
        cursor.last_success_at = old.last_success_at;
        let result = cursors.write(org, id, &cursor).await;
        self.spawn(entry);
        result?;
        Ok(self.view(entry))
    }

    /// Sends one test event to the stream's destination; reports its status and timing.
    pub async fn test(&self, org: &str, id: &str) -> Result<TestReport, StreamError> {
        self.check_here(org)?;
        let (def, secrets) = {
            let entries = self.entries.lock().await;
            let e = entries.get(&key(org, id)).ok_or(StreamError::NotFound)?;
            (e.def.clone(), e.secrets.clone())
        };
        let started = Instant::now();
        let attempt = async {
            let item =
                delivery::test_item(&def, &self.deps.context).map_err(SendError::NonRetryable)?;
            let mut sender =
                Sender::new(&def.id, &def.destination, &secrets, self.deps.allow.clone())?;
            sender.test(&item).await
        };
        // Under the API's default request timeout (30 s), so the caller gets this report
        // rather than a bare 408 when the destination never answers.
        let answer: Result<TestAnswer, SendError> = tokio::time::timeout(TEST_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(SendError::Retryable(format!(
                    "no answer from the destination within {TEST_TIMEOUT:?}"
                )))
            });
        let duration_ms = started.elapsed().as_millis() as u64;
        Ok(match answer {
            Ok(a) => TestReport {
                accepted: a.accepted,
                status: a.status,
                duration_ms,
                error: None,
            },
            Err(e) => TestReport {
                accepted: false,
                status: None,
                duration_ms,
                error: Some(e.to_string()),
            },
        })
    }

    /// Stops every task (at shutdown): each finishes or drops its current send; cursors stay
    /// where the last accepted batch put them.
    pub async fn stop(&self) {
        let mut entries = self.entries.lock().await;
        for e in entries.values_mut() {
            self.stop_task(e).await;
        }
    }

    fn view(&self, e: &Entry) -> StreamView {
        let newest = self.deps.trees.size(&e.def.org);
        let mut status = e.status.snapshot(newest);
        if e.def.paused {
            status.state = State::Paused;
        }
        StreamView {
            def: e.def.clone(),
            has_secret: e.secrets.secret.is_some()
                || e.secrets.token.is_some()
                || e.secrets.secret_access_key.is_some(),
            header_names: e.secrets.headers.keys().cloned().collect(),
            status,
        }
    }

    fn initial_cursor(&self, def: &StreamDef) -> Cursor {
        match def.start {
            Start::Now => Cursor::at(self.deps.trees.size(&def.org)),
            Start::Beginning => Cursor::from_time(DateTime::<Utc>::MIN_UTC),
            Start::Time(t) => Cursor::from_time(t),
        }
    }

    fn spawn(&self, entry: &mut Entry) {
        if entry.def.paused {
            entry.status.update(|l| l.state = State::Paused);
            return;
        }
        entry.status.update(|l| {
            l.state = State::Healthy;
            l.last_error = None;
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(delivery::run(
            self.deps.clone(),
            entry.def.clone(),
            entry.secrets.clone(),
            entry.status.clone(),
            entry.cursors.clone(),
            stop.clone(),
        ));
        entry.task = Some((stop, task));
    }

    async fn stop_task(&self, entry: &mut Entry) {
        if let Some((stop, task)) = entry.task.take() {
            stop.cancel();
            let _ = task.await;
        }
    }

    async fn check_destination(
        &self,
        d: &super::definition::Destination,
    ) -> Result<(), StreamError> {
        let (host, port) = d.host_port()?;
        match self.deps.allow.resolve(&host, port).await {
            Err(e @ super::allow::Refused::Internal { .. }) => {
                Err(StreamError::Refused(e.to_string()))
            }
            // A name that does not resolve now may later; the stream will show it.
            _ => Ok(()),
        }
    }

    /// Prepares the API-made streams' next file (`StreamStore::prepare`): those of `entries`,
    /// with `changed` in place of its own.
    async fn prepare(
        &self,
        entries: &BTreeMap<(String, String), Entry>,
        changed: Option<&Entry>,
    ) -> Result<PreparedFile, StreamError> {
        let mut all: Vec<(StreamDef, Secrets)> = entries
            .values()
            .filter(|e| changed.is_none_or(|c| c.def.org != e.def.org || c.def.id != e.def.id))
            .map(|e| (e.def.clone(), e.secrets.clone()))
            .collect();
        if let Some(c) = changed {
            all.push((c.def.clone(), c.secrets.clone()));
        }
        let store = self.deps.store.clone();
        Ok(blocking(move || store.prepare(all.iter().map(|(d, s)| (d, s)))).await??)
    }

    /// Puts a prepared definitions file in place.
    async fn commit(&self, prepared: PreparedFile) -> Result<(), StreamError> {
        blocking(move || prepared.commit())
            .await?
            .map_err(|e| StreamError::Store(e.into()))
    }

    /// A single node's cursor file, written durably; a full disk is the store's error (the API
    /// answers 503), not a cursor store's text.
    async fn write_local_cursor(
        &self,
        org: &str,
        id: &str,
        cursor: &Cursor,
    ) -> Result<(), StreamError> {
        let (store, org, id, cursor) = (
            self.deps.store.clone(),
            org.to_string(),
            id.to_string(),
            cursor.clone(),
        );
        Ok(blocking(move || store.write_cursor(&org, &id, &cursor)).await??)
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StreamError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StreamError::Refused(e.to_string()))
}

/// The stream's cursor, read where it is kept.
async fn read_cursor(
    cursors: &dyn CursorStore,
    org: &str,
    id: &str,
) -> Result<Option<Cursor>, StreamError> {
    Ok(cursors.read(org, id).await?)
}

fn key(org: &str, id: &str) -> (String, String) {
    (org.to_string(), id.to_string())
}

/// A copy of an entry without its task (for saving while the real one is held).
fn placeholder(e: &Entry) -> Entry {
    Entry {
        def: e.def.clone(),
        secrets: e.secrets.clone(),
        status: e.status.clone(),
        task: None,
        cursors: e.cursors.clone(),
    }
}

/// Allowlist from the config, for the server.
pub fn allowlist(config: &codestax_config::StreamsConfig) -> Result<Allowlist, String> {
    Allowlist::new(&config.allow_destinations)
}
