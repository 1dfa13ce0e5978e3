//! Running the collector: open the index and the store, replay the WAL, serve HTTP and OTLP/gRPC,
//! index in the background ([`IndexTask`], with the retention janitor: it needs the index's one
//! writer), probe a failing WAL's disk, and stop cleanly (stop accepting, finish in-flight
//! requests, commit). A disk that fills up or fails stops nothing: [`Health`] says which part
//! cannot write, and both recover by themselves once it can again.

use crate::api::{self, ApiLimits, AppState, record_key_events};
use crate::health::{Health, Part, probe_while_failing};
use crate::index::{AuditIndex, IndexOptions, MergeRoom};
use crate::indexing::{IndexTask, Schedule};
use crate::ingest::{Ingest, IngestSettings, RateLimit, RateLimiter};
use crate::keys::KeyStore;
use crate::metrics::Metrics;
use crate::retention::{Janitor, RetentionError, RetentionPolicy};
use crate::saved_views::SavedViews;
use crate::store::{IdLookup, IndexBatch, Store, StoreOptions};
use crate::stream::{Allowlist, Deps as StreamDeps, SecretKey, StreamStore, Streams};
use codestax_common::AuditRecord;
use codestax_common::format::Context;
use codestax_config::CollectorConfig;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// [`Store::room_kept_free`], for the index's merges.
type WalRoom = Box<dyn Fn() -> u64 + Send + Sync>;

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
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::JoinError),
    #[error("cluster: {0}")]
    SigningKey(#[from] crate::cluster::SigningKeyError),
    #[error("cluster: the settings: {0}")]
    Settings(#[from] crate::cluster::SettingsError),
    #[error("indexer stopped: {0}")]
    Indexer(String),
    #[error("saved views: {0}")]
    SavedViews(#[from] crate::saved_views::SavedViewError),
    #[error("streams: {0}")]
    Streams(String),
    #[error("cluster: {0}")]
    StreamOffer(#[from] crate::cluster::StreamOfferError),
}

/// The store verifies a dedupe hash hit against the index. A failed lookup answers "not stored":
/// at worst a record is indexed twice, never lost.
impl IdLookup for AuditIndex {
    fn stored(&self, org: &str, id: &str, time: i64) -> Option<AuditRecord> {
        self.get_near(org, id, time).unwrap_or_else(|e| {
            tracing::error!(error = %e, org, id, "dedupe lookup in the index failed");
            None
        })
    }

    fn contains(&self, org: &str, id: &str, time: i64) -> bool {
        AuditIndex::contains(self, org, id, time).unwrap_or_else(|e| {
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
    let health = Health::default();
    let keys = KeyStore::open(&layout.root)?;
    let retention = Arc::new(RetentionPolicy::open(&config, &layout.root)?);

    // Listen first, so /healthz and /readyz answer while the WAL is replayed.
    let http = bind(config.http.listen, "http.listen").await?;
    let grpc = bind(config.grpc.listen, "grpc.listen").await?;
    let metrics_listener = bind(config.metrics.listen, "metrics.listen").await?;
    tracing::info!(http = %config.http.listen, grpc = %config.grpc.listen, metrics = %config.metrics.listen, data_dir = %layout.root.display(), "listening");

    // Merges leave free what the WAL keeps for indexing what it acknowledged (they share the
    // data dir's disk unless `wal.keep_free_bytes` is 0); the store, opened after the index,
    // fills in its backlog's part.
    let wal_room: Arc<OnceLock<WalRoom>> = Arc::default();
    let keep_free_bytes = config.wal.keep_free_bytes;
    let merge_room = (keep_free_bytes > 0).then(|| {
        let wal_room = wal_room.clone();
        MergeRoom(Arc::new(move || {
            wal_room.get().map_or(keep_free_bytes, |room| room())
        }))
    });
    let (index, indexer) = AuditIndex::open(
        &layout.index,
        IndexOptions {
            writer_memory_bytes: config.index.writer_memory_bytes,
            writer_threads: config.index.writer_threads,
            merge_threads: config.index.merge_threads,
            max_open_writers: config.index.max_open_writers,
            // Validated to at most 4 GiB.
            cold_stage_bytes: usize::try_from(config.index.cold_stage_bytes).unwrap_or(usize::MAX),
            cold_flush_after: config.index.cold_flush_after,
            cold_flush_threads: config.index.cold_flush_threads,
            // Validated to at most 1 GiB.
            tail_bytes: usize::try_from(config.streams.tail_bytes).unwrap_or(usize::MAX),
            merge_room,
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
            keep_free_bytes: config.wal.keep_free_bytes,
            group_commit_max_wait: config.wal.group_commit_max_wait,
            ..StoreOptions::default()
        },
        Arc::new(index.clone()) as Arc<dyn IdLookup>,
        hashes,
        index.indexed_through(),
        chain_heads,
        sink,
        health.clone(),
        trees.clone(),
    )?;
    let _ = wal_room.set(Box::new(store.room_kept_free_fn()));
    // Cluster mode: every node signs with the cluster's key (cached in the data dir).
    if let Some(cluster) = &config.cluster {
        let key_file = stream_key_file(&config, &layout);
        let secret = SecretKey::load_or_generate(&key_file)
            .map_err(|e| ServeError::Streams(e.to_string()))?;
        // A single node's data dir joining: its streams must open with the key file before
        // anything is sealed with it in the metastore (they are offered later).
        let streams = StreamStore::open(&layout.root, secret.clone())
            .map_err(|e| ServeError::Streams(e.to_string()))?;
        crate::cluster::check_streams_open(&streams, &key_file)?;
        if config.signing.key_file.is_none() {
            crate::cluster::adopt_signing_key(
                cluster,
                &layout.root,
                &config.signing.key_name,
                &secret,
                &key_file,
            )
            .await?;
        }
    }
    let heads = crate::tree::open_heads(&layout.heads, &layout.root, &config.signing, &trees)?;
    index.set_cursor_key(heads.cursor_key());
    let ingest = Ingest::new(
        store.clone(),
        IngestSettings {
            max_record_bytes: config.ingest.max_record_bytes,
            allow_custom_actions: config.ingest.allow_custom_actions,
        },
        metrics.clone(),
        health.clone(),
    )
    .with_retention(retention.clone())
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
    // Cluster mode: ingest publishes to JetStream; the lease keeper holds this node's shards.
    let cluster_stop = CancellationToken::new();
    let mut lease_task = None;
    // The owners start once the indexer runs (they wait for its commits).
    let mut owners = None;
    let mut cluster_api = None;
    // What the streams follow in cluster mode: this node's leases and the shards it serves.
    let mut stream_leases = None;
    let saved_views = Arc::new(SavedViews::open(&layout.root)?);
    let ingest = match &config.cluster {
        None => ingest,
        Some(cluster) => {
            let node = crate::cluster::ClusterNode::join(cluster).await?;
            tracing::info!(node = %cluster.node_id, shards = cluster.shards, stream = %cluster.nats.stream, "joined the cluster");
            lease_task = Some(tokio::spawn(node.keeper.run(cluster_stop.clone())));
            // Keys from the metastore into the local cache; an outage keeps the cached ones.
            let key_sync = Arc::new(crate::cluster::KeySync::new(keys.clone(), cluster));
            if let Err(e) = key_sync.sync().await {
                tracing::warn!(error = %e, "cannot read the cluster's API keys at start; using the cached keys");
            }
            tokio::spawn(key_sync.clone().run(cluster_stop.clone()));
            // Retention overrides and saved views: the data dir's offered, the cluster's cached.
            let settings = Arc::new(crate::cluster::SettingsSync::new(
                cluster,
                retention.clone(),
                saved_views.clone(),
            ));
            settings.offer_and_sync().await?;
            tokio::spawn(settings.clone().run(cluster_stop.clone()));
            tokio::spawn(node.directory.clone().run(cluster_stop.clone()));
            cluster_api = Some(crate::cluster::ClusterApi {
                directory: node.directory,
                keys: key_sync,
                settings,
                forward_warnings: Default::default(),
            });
            stream_leases = Some((cluster, node.held.clone(), node.serving.clone()));
            owners = Some((
                crate::cluster::Owners::new(
                    node.log.clone(),
                    store.clone(),
                    index.clone(),
                    metrics.clone(),
                    node.snapshots,
                    retention.clone(),
                    node.serving,
                ),
                node.held,
            ));
            ingest.with_log(node.log)
        }
    };
    let (streams, stream_sync) =
        start_streams(&config, &layout, &index, &trees, &ingest, stream_leases).await?;
    // Stopped before the streams are: it would start them again.
    let stream_sync_stop = CancellationToken::new();
    let stream_sync_task =
        stream_sync.map(|sync| tokio::spawn(sync.run(streams.clone(), stream_sync_stop.clone())));
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
            request_timeout: config.limits.request_timeout,
        },
        trees,
        heads,
        sidecars: Default::default(),
        health: health.clone(),
        saved_views,
        streams: Some(streams.clone()),
        cluster: cluster_api,
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
        let timeout = config.limits.request_timeout;
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .timeout(timeout)
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(grpc),
                    stop.cancelled_owned(),
                )
                .await
                .map_err(ServeError::Grpc)
        })
    };

    // Replay what the WAL holds beyond the index, then serve. If the index cannot write, the
    // collector serves all the same (reads, and /readyz saying why not ready) and the indexer
    // task retries.
    let started = Instant::now();
    let replayed = replay.len();
    let janitor = Janitor::new(retention, index.clone());
    let task = IndexTask::new(
        indexer,
        batches,
        store.clone(),
        metrics.clone(),
        janitor,
        health.clone(),
        layout.index.clone(),
    );
    let task = tokio::task::spawn_blocking(move || {
        let mut task = task;
        task.replay(&replay);
        task
    })
    .await
    .map_err(|e| ServeError::Indexer(e.to_string()))?;
    health.set_started();
    tracing::info!(replayed, seconds = started.elapsed().as_secs_f64(), "ready");

    // The indexer runs before anything is submitted: the store hands new records to it through a
    // bounded queue, and a submit waits while that queue is full.
    let indexer_stop = CancellationToken::new();
    let indexer_task = {
        let schedule = Schedule {
            commit: config.index.commit_interval,
            janitor: config.retention.janitor_interval,
        };
        tokio::spawn(task.run(schedule, indexer_stop.clone()))
    };
    let owners_task =
        owners.map(|(owners, held)| tokio::spawn(owners.run(held, cluster_stop.clone())));
    // A WAL that failed to write is healthy again with the next group it writes; this tells
    // /readyz so on an idle collector too, once its disk takes writes.
    let wal_probe = tokio::spawn(probe_while_failing(
        health.clone(),
        Part::Wal,
        layout.wal.clone(),
        {
            let store = store.clone();
            move || store.room_kept_free()
        },
        WAL_PROBE_INTERVAL,
        shutdown.clone(),
    ));

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
    // Stream tasks hold the store (for their audit entries): stopped and dropped before it closes.
    stream_sync_stop.cancel();
    if let Some(task) = stream_sync_task {
        let _ = task.await;
    }
    streams.stop().await;
    drop(streams);
    // Leases released last among the cluster's parts: the others take over at once.
    cluster_stop.cancel();
    // The owners hold the store: stopped (what they had not acknowledged comes again) before it
    // closes.
    if let Some(task) = owners_task {
        let _ = task.await;
    }
    if let Some(task) = lease_task {
        let _ = task.await;
    }
    wal_probe.abort();
    let _ = wal_probe.await;
    indexer_stop.cancel();
    indexer_task
        .await
        .map_err(|e| ServeError::Indexer(e.to_string()))?;
    drop(ingest);
    store.close().await;
    http_result?;
    grpc_result?;
    metrics_result?;
    tracing::info!("stopped");
    Ok(())
}

/// The secret key (kept outside the data directory), the stored and declared streams, and their
/// delivery tasks.
/// `streams.secret_key_file`, or `<data_dir>.streams-key` (beside the data dir, not in it).
fn stream_key_file(config: &CollectorConfig, layout: &Layout) -> PathBuf {
    config.streams.secret_key_file.clone().unwrap_or_else(|| {
        let mut name = layout.root.as_os_str().to_owned();
        name.push(".streams-key");
        PathBuf::from(name)
    })
}

/// In cluster mode (`leases`: the config, what this node holds and serves) also the task that
/// keeps the streams in the metastore and runs those of the shards served here.
async fn start_streams(
    config: &CollectorConfig,
    layout: &Layout,
    index: &AuditIndex,
    trees: &Arc<crate::tree::Trees>,
    ingest: &Ingest,
    leases: Option<(
        &codestax_config::ClusterConfig,
        tokio::sync::watch::Receiver<crate::cluster::Held>,
        crate::cluster::Serving,
    )>,
) -> Result<(Streams, Option<Arc<crate::cluster::StreamSync>>), ServeError> {
    let key_file = stream_key_file(config, layout);
    let key =
        SecretKey::load_or_generate(&key_file).map_err(|e| ServeError::Streams(e.to_string()))?;
    let store = Arc::new(
        StreamStore::open(&layout.root, key).map_err(|e| ServeError::Streams(e.to_string()))?,
    );
    let sync = match leases {
        None => None,
        Some((cluster, held, serving)) => {
            let password = cluster.postgres.password.as_deref();
            let mut connection =
                crate::cluster::Metastore::connect(&cluster.postgres.url, password)
                    .await
                    .map_err(|e| ServeError::Streams(e.to_string()))?;
            // A single node's data dir joining: its streams are the cluster's from now on.
            crate::cluster::offer_streams(
                &mut connection,
                store.clone(),
                index,
                cluster.shards,
                &key_file,
            )
            .await?;
            Some(Arc::new(crate::cluster::StreamSync::new(
                crate::cluster::MetastoreLink::new(&cluster.postgres.url, password, connection),
                store.clone(),
                held,
                serving,
                cluster.shards,
            )))
        }
    };
    let allow = Allowlist::new(&config.streams.allow_destinations).map_err(ServeError::Streams)?;
    let deps = StreamDeps {
        index: index.clone(),
        trees: trees.clone(),
        ingest: ingest.clone(),
        store,
        allow,
        backoff_max: crate::stream::delivery::BACKOFF_MAX,
        // OCSF `metadata.reporter` / ECS `observer`: this collector (its node id in a cluster).
        context: Context::new(env!("CARGO_PKG_VERSION")).with_collector(
            config.cluster.as_ref().map(|c| c.node_id.clone()),
            Some(crate::stream::destination::hostname()).filter(|h| h != "-"),
        ),
    };
    let shared = sync
        .clone()
        .map(|s| s as Arc<dyn crate::stream::SharedStreams>);
    let streams = Streams::start(deps, &config.streams.declared, shared)
        .await
        .map_err(|e| ServeError::Streams(e.to_string()))?;
    Ok((streams, sync))
}

/// How often a WAL that failed to write is probed for room.
const WAL_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Stored batches that may wait for the indexer before acks wait too. Every queued batch is a
/// batch that is acknowledged but not yet searchable: with 16, saturating ingest ran ~16,000
/// records ahead of the index and freshness p99 reached 2.6 s; with 4 it stays under 1 s at the
/// same throughput (BENCHMARKS.md).
const INDEX_QUEUE_BATCHES: usize = 4;

async fn bind(
    addr: std::net::SocketAddr,
    what: &'static str,
) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, what, source })
}
