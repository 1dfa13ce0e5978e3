//! Running the collector: open the index and the store, replay the WAL, serve HTTP and OTLP/gRPC,
//! index in the background (with the retention janitor on the same task: it needs the index's one
//! writer), and stop cleanly (stop accepting, finish in-flight requests, commit).

use crate::api::{self, ApiLimits, AppState, record_key_events};
use crate::index::{AuditIndex, IndexOptions, Indexer};
use crate::ingest::{Ingest, IngestSettings, RateLimit, RateLimiter};
use crate::keys::KeyStore;
use crate::metrics::Metrics;
use crate::retention::{Janitor, RetentionError, RetentionPolicy};
use crate::store::{IdLookup, IndexBatch, Store, StoreOptions};
use chrono::Utc;
use codestax_config::CollectorConfig;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Why the collector could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: std::net::SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("index: {0}")]
    Index(#[from] crate::index::IndexError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("keys: {0}")]
    Keys(#[from] crate::keys::KeyError),
    #[error("retention: {0}")]
    Retention(#[from] RetentionError),
    #[error("Merkle trees: {0}")]
    Tree(#[from] crate::tree::StartError),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("gRPC server: {0}")]
    Grpc(tonic::transport::Error),
    #[error("indexer stopped: {0}")]
    Indexer(String),
}

/// The store verifies a dedupe hash hit against the index. A failed lookup answers "not stored":
/// at worst a record is indexed twice, never lost.
impl IdLookup for AuditIndex {
    fn contains(&self, org: &str, id: &str) -> bool {
        AuditIndex::contains(self, org, id).unwrap_or_else(|e| {
            tracing::error!(error = %e, org, id, "dedupe lookup in the index failed");
            false
        })
    }
}

/// Where the collector keeps its state under `data_dir`.
pub struct Layout {
    pub wal: PathBuf,
    pub index: PathBuf,
    pub tree: PathBuf,
    pub heads: PathBuf,
    pub root: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &std::path::Path) -> Self {
        Layout {
            wal: data_dir.join("wal"),
            index: data_dir.join("index"),
            tree: data_dir.join("tree"),
            heads: data_dir.join("heads"),
            root: data_dir.to_path_buf(),
        }
    }
}

/// Runs the collector until `shutdown` is cancelled.
pub async fn run(config: CollectorConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    let layout = Layout::new(&config.data_dir);
    std::fs::create_dir_all(&layout.root).map_err(|source| ServeError::DataDir {
        path: layout.root.clone(),
        source,
    })?;
    let metrics = Arc::new(Metrics::with_per_org(config.metrics.per_org));
    let keys = KeyStore::open(&layout.root)?;
    let retention = Arc::new(RetentionPolicy::open(&config, &layout.root)?);

    // Listen first, so /healthz and /readyz answer while the WAL is replayed.
    let http = bind(config.http.listen, "http.listen").await?;
    let grpc = bind(config.grpc.listen, "grpc.listen").await?;
    let metrics_listener = bind(config.metrics.listen, "metrics.listen").await?;
    tracing::info!(http = %config.http.listen, grpc = %config.grpc.listen, metrics = %config.metrics.listen, data_dir = %layout.root.display(), "listening");

    let (index, indexer) = AuditIndex::open(
        &layout.index,
        IndexOptions {
            writer_memory_bytes: config.index.writer_memory_bytes,
            writer_threads: config.index.writer_threads,
            merge_threads: config.index.merge_threads,
            ..IndexOptions::default()
        },
    )?;
    let mut hashes = Vec::new();
    index.for_each_uid_hash(|h| hashes.push(h))?;
    // Each org's chain continues from its newest record in the index, or from the newest record
    // retention deleted if that is higher (an org whose every record was deleted).
    let chain_heads = retention.checkpoints().merge_heads(index.chain_heads()?);
    let trees = crate::tree::open_trees(&layout.tree, &index, &chain_heads)?;
    let (sink, batches) = mpsc::channel::<IndexBatch>(INDEX_QUEUE_BATCHES);
    let (store, replay) = Store::open_with_trees(
        &layout.wal,
        StoreOptions {
            segment_bytes: config.wal.segment_bytes,
            group_commit_max_wait: config.wal.group_commit_max_wait,
            ..StoreOptions::default()
        },
        Arc::new(index.clone()) as Arc<dyn IdLookup>,
        hashes,
        index.indexed_through(),
        chain_heads,
        sink,
        trees.clone(),
    )?;
    let heads = crate::tree::open_heads(&layout.heads, &layout.root, &config.signing, &trees)?;
    let ingest = Ingest::new(
        store.clone(),
        IngestSettings {
            max_record_bytes: config.ingest.max_record_bytes,
            allow_custom_actions: config.ingest.allow_custom_actions,
        },
        metrics.clone(),
    )
    .with_rate_limiter(RateLimiter::new(
        RateLimit::from_config(
            config.limits.ingest_records_per_second_per_key,
            config.limits.ingest_burst_records_per_key,
        ),
        RateLimit::from_config(
            config.limits.ingest_records_per_second_per_org,
            config.limits.ingest_burst_records_per_org,
        ),
    ));
    let ready = Arc::new(AtomicBool::new(false));
    let state = AppState {
        keys: keys.clone(),
        index: index.clone(),
        ingest: ingest.clone(),
        metrics: metrics.clone(),
        retention: retention.clone(),
        limits: ApiLimits {
            max_body_bytes: config.limits.max_body_bytes,
            max_decompressed_bytes: config.limits.max_decompressed_bytes,
            max_search_limit: config.limits.max_search_limit,
            facet_top_n: config.index.facet_top_n,
        },
        trees,
        heads,
        ready: ready.clone(),
    };

    let metrics_task = {
        let app = api::metrics_app(state.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(metrics_listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .map_err(ServeError::Http)
        })
    };
    let http_task = {
        let app = api::app(state);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(http, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .map_err(ServeError::Http)
        })
    };
    let grpc_task = {
        let sink = crate::api::OtlpIngest {
            ingest: ingest.clone(),
            keys: keys.clone(),
        };
        let service = codestax_otlp_receiver::grpc::service(sink, config.limits.max_body_bytes);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(grpc),
                    stop.cancelled_owned(),
                )
                .await
                .map_err(ServeError::Grpc)
        })
    };

    // Replay what the WAL holds beyond the index, then serve.
    let started = Instant::now();
    let replayed = replay.len();
    let mut indexer = tokio::task::spawn_blocking(move || -> Result<Indexer, ServeError> {
        let mut indexer = indexer;
        indexer.add_batch(&replay)?;
        indexer.commit()?;
        Ok(indexer)
    })
    .await
    .map_err(|e| ServeError::Indexer(e.to_string()))??;
    if let Some(through) = index.indexed_through() {
        store.mark_indexed_through(through);
    }
    ready.store(true, Ordering::Release);
    tracing::info!(replayed, seconds = started.elapsed().as_secs_f64(), "ready");

    // The indexer runs before anything is submitted: the store hands new records to it through a
    // bounded queue, and a submit waits while that queue is full.
    let indexer_stop = CancellationToken::new();
    let indexer_task = {
        let (store, metrics, stop) = (store.clone(), metrics.clone(), indexer_stop.clone());
        let schedule = Schedule {
            commit: config.index.commit_interval,
            janitor: config.retention.janitor_interval,
        };
        let janitor = Janitor::new(retention, index.clone());
        let mut batches = batches;
        tokio::spawn(async move {
            run_indexer(
                &mut indexer,
                &mut batches,
                &store,
                &metrics,
                &janitor,
                schedule,
                stop,
            )
            .await
        })
    };

    // Key events of changes other writers (the CLI) made: at start, then whenever such changes
    // are loaded — by this loop, or by an unknown token that made the store look again.
    let mut recorded_through = keys.reloads();
    record_key_events(&keys, &ingest, &index).await;
    let keys_task = {
        let (keys, ingest, index, stop) = (
            keys.clone(),
            ingest.clone(),
            index.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                    // Loaded by an unknown token's second look: record at once.
                    _ = keys.reloaded() => {}
                }
                if let Err(e) = keys.reload_if_changed() {
                    tracing::warn!(error = %e, "cannot reload the key file; keeping the keys loaded before");
                }
                let reloads = keys.reloads();
                if reloads != recorded_through {
                    recorded_through = reloads;
                    record_key_events(&keys, &ingest, &index).await;
                }
            }
        })
    };

    // Serve until asked to stop; the servers finish in-flight requests, whose records are then
    // in the WAL and queued for the indexer.
    let http_result = http_task
        .await
        .map_err(|e| ServeError::Indexer(e.to_string()))?;
    let grpc_result = grpc_task
        .await
        .map_err(|e| ServeError::Indexer(e.to_string()))?;
    let metrics_result = metrics_task
        .await
        .map_err(|e| ServeError::Indexer(e.to_string()))?;
    keys_task.abort();
    let _ = keys_task.await;
    indexer_stop.cancel();
    let indexer_result = indexer_task
        .await
        .map_err(|e| ServeError::Indexer(e.to_string()))?;
    drop(ingest);
    store.close().await;
    http_result?;
    grpc_result?;
    metrics_result?;
    indexer_result?;
    tracing::info!("stopped");
    Ok(())
}

async fn bind(
    addr: std::net::SocketAddr,
    what: &'static str,
) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, what, source })
}

/// The first janitor run comes this long after start (or after one interval, if shorter).
const JANITOR_FIRST_RUN: Duration = Duration::from_secs(10);

/// How often the indexer task commits and runs the janitor.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    commit: Duration,
    janitor: Duration,
}

/// Stored batches that may wait for the indexer before acks wait too. Every queued batch is a
/// batch that is acknowledged but not yet searchable: with 16, saturating ingest ran ~16,000
/// records ahead of the index and freshness p99 reached 2.6 s; with 4 it stays under 1 s at the
/// same throughput (BENCHMARKS.md).
const INDEX_QUEUE_BATCHES: usize = 4;

/// Indexes what the store hands over and commits every `schedule.commit`, so a record is
/// searchable within about that long after its ack; runs the janitor shortly after start, then
/// every `schedule.janitor` (ingest waits meanwhile: the janitor needs the one writer). On
/// `stop`, indexes what is queued and commits once more.
async fn run_indexer(
    indexer: &mut Indexer,
    batches: &mut mpsc::Receiver<IndexBatch>,
    store: &Store,
    metrics: &Metrics,
    janitor: &Janitor,
    schedule: Schedule,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    let mut tick = tokio::time::interval(schedule.commit);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let first = tokio::time::Instant::now() + schedule.janitor.min(JANITOR_FIRST_RUN);
    let mut janitor_tick = tokio::time::interval_at(first, schedule.janitor);
    janitor_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the oldest record added since the last commit was acknowledged; `None`: nothing added.
    let mut oldest: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                while let Ok(batch) = batches.try_recv() {
                    add(indexer, batch, &mut oldest)?;
                }
                break;
            }
            batch = batches.recv() => match batch {
                Some(batch) => add(indexer, batch, &mut oldest)?,
                None => break,
            },
            _ = tick.tick() => {
                if oldest.is_some() {
                    commit(indexer, store, metrics, &mut oldest)?;
                } else if let Err(e) = tokio::task::block_in_place(|| indexer.refresh()) {
                    tracing::warn!(error = %e, "making merged segments searchable failed; the next commit will");
                }
            }
            _ = janitor_tick.tick() => {
                // A run that went through committed what was added before it; after a failed
                // one, the next tick commits (again).
                if run_janitor(indexer, janitor, store, metrics) {
                    observe_lag(metrics, &mut oldest);
                }
            }
        }
    }
    if oldest.is_some() {
        commit(indexer, store, metrics, &mut oldest)?;
    }
    Ok(())
}

/// Adds a stored batch to the index (searchable at the next commit).
fn add(
    indexer: &mut Indexer,
    batch: IndexBatch,
    oldest: &mut Option<Instant>,
) -> Result<(), ServeError> {
    tokio::task::block_in_place(|| indexer.add_stored(&batch.records, Some(&batch.stored)))?;
    // Batches arrive in the order they were acknowledged.
    oldest.get_or_insert(batch.durable_at);
    Ok(())
}

/// Commits what was added, making it searchable, and observes how long the oldest of it waited.
fn commit(
    indexer: &mut Indexer,
    store: &Store,
    metrics: &Metrics,
    oldest: &mut Option<Instant>,
) -> Result<(), ServeError> {
    let started = Instant::now();
    let through = tokio::task::block_in_place(|| indexer.commit())?;
    metrics.observe_commit(started.elapsed().as_secs_f64());
    observe_lag(metrics, oldest);
    if let Some(lsn) = through {
        store.mark_indexed_through(lsn);
    }
    Ok(())
}

/// After a commit: the oldest record it made searchable was acknowledged at `oldest`.
fn observe_lag(metrics: &Metrics, oldest: &mut Option<Instant>) {
    if let Some(acked) = oldest.take() {
        metrics.observe_index_lag(acked.elapsed().as_secs_f64());
    }
}

/// One janitor run; whether it went through. A failure is logged and counted, and the next run
/// tries again: deleting late is not worth stopping ingest for (reads hide expired records anyway).
fn run_janitor(indexer: &mut Indexer, janitor: &Janitor, store: &Store, metrics: &Metrics) -> bool {
    let result = tokio::task::block_in_place(|| janitor.run(indexer, Utc::now()));
    // The run commits first: tell the store, so it can drop the WAL segments now indexed.
    if let Some(lsn) = indexer.indexed_through() {
        store.mark_indexed_through(lsn);
    }
    match result {
        Ok(report) => {
            metrics.observe_janitor(&report, Utc::now());
            true
        }
        Err(e) => {
            metrics.observe_janitor_failure();
            tracing::error!(error = %e, "retention janitor failed; it will try again at its next run");
            false
        }
    }
}
