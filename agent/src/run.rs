//! Building the agent from its configuration and running it until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use codestax_config::AgentConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, ApiState};
use crate::checkpoint::CheckpointStore;
use crate::forward::{Backoff, BatchLimits, Forwarder, Upstream, UpstreamError};
use crate::metrics::Metrics;
use crate::quarantine::{Quarantine, QuarantineError};
use crate::receiver::{OtlpIntake, grpc_service, http_router};
use crate::source::file::{
    FileServer, FileServerOptions, FileSettings, FileSourceError, FileTailer, GlobError,
};
use crate::spool::{Spool, SpoolError, SpoolOptions};
use codestax_storage::StateFileError;

/// The agent could not start or stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("data_dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data_dir {path} is in use by another codestax-agent")]
    Locked { path: PathBuf },
    #[error("sources.files[{index}]: {source}")]
    Glob { index: usize, source: GlobError },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Checkpoints(#[from] StateFileError),
    #[error(transparent)]
    Quarantine(#[from] QuarantineError),
    #[error(transparent)]
    FileSource(#[from] FileSourceError),
    #[error("cannot listen on {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// A started agent: its listeners are bound and every part is running.
pub struct RunningAgent {
    /// `api.listen` as bound.
    pub api_addr: SocketAddr,
    /// `otlp.grpc_listen` as bound (when the receivers are enabled).
    pub grpc_addr: Option<SocketAddr>,
    /// `otlp.http_listen` as bound (when the receivers are enabled).
    pub http_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    files: Option<FileServer>,
    intake_tasks: Vec<JoinHandle<()>>,
    forwarder: JoinHandle<()>,
    api: JoinHandle<()>,
    trimmer: JoinHandle<()>,
    checkpoints: CheckpointStore,
    _lock: DirLock,
}

/// Runs the agent until SIGTERM or SIGINT, then shuts down cleanly (see
/// [`RunningAgent::shutdown`]). Builds its own multi-threaded runtime.
pub fn run(config: AgentConfig) -> Result<(), AgentError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    runtime.block_on(async {
        let agent = start(&config).await?;
        shutdown_signal().await;
        tracing::info!("stopping: finishing what is in flight");
        agent.shutdown().await;
        Ok(())
    })
}

/// Resolves on SIGTERM or SIGINT (the binaries' one shutdown signal).
pub use codestax_config::shutdown_signal;

/// Checks and opens everything, binds the listeners and starts every part.
pub async fn start(config: &AgentConfig) -> Result<RunningAgent, AgentError> {
    // Validate and convert first: nothing is opened if the configuration cannot work.
    let cwd = std::env::current_dir().map_err(|source| AgentError::DataDir {
        path: PathBuf::from("."),
        source,
    })?;
    let line_cap = usize::try_from(config.spool.max_bytes / 4).unwrap_or(usize::MAX);
    let sources = config
        .sources
        .files
        .iter()
        .enumerate()
        .map(|(index, files)| {
            FileSettings::from_config(files, &cwd, line_cap)
                .map_err(|source| AgentError::Glob { index, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tls = &config.collector.tls;
    let upstream = Upstream::new(
        &config.collector.endpoint,
        config.collector.token.as_deref(),
        tls.enabled.then_some((&tls.ca_file, &tls.server_name)),
    )?
    .with_compression(config.collector.compression);
    raise_open_files_limit();

    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|source| AgentError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let lock = DirLock::acquire(data_dir)?;
    let metrics = Arc::new(Metrics::new());
    let (spool, recovery) = Spool::open(
        &data_dir.join("spool"),
        SpoolOptions {
            max_bytes: config.spool.max_bytes,
            segment_bytes: config.spool.segment_bytes,
        },
    )?;
    metrics.spool_damaged.inc_by(recovery.damaged.len() as u64);
    metrics.spool_max_bytes.set(config.spool.max_bytes);
    metrics.spool_bytes.set(spool.stats().used_bytes);
    tracing::info!(
        pending = recovery.pending_records,
        spool_bytes = spool.stats().used_bytes,
        "spool opened"
    );
    let checkpoints =
        CheckpointStore::open(&data_dir.join("checkpoints.json"), recovery.file_positions)?;
    let quarantine = Quarantine::open(&data_dir.join("quarantine"), metrics.clone())?;

    // Bind every listener before starting anything, so a taken port fails the start.
    let bind = |what: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| AgentError::Bind { what, addr, source })
    };
    let api_listener = bind("api.listen", config.api.listen).await?;
    let otlp_listeners = if config.otlp.enabled {
        Some((
            bind("otlp.grpc_listen", config.otlp.grpc_listen).await?,
            bind("otlp.http_listen", config.otlp.http_listen).await?,
        ))
    } else {
        None
    };
    let local = |l: &TcpListener| l.local_addr().expect("a bound listener has an address");

    let (stop, stop_rx) = watch::channel(false);
    let api_addr = local(&api_listener);
    let api = tokio::spawn(serve_http(
        api_listener,
        api::app(ApiState {
            metrics: metrics.clone(),
            spool: spool.clone(),
        }),
        stop_rx.clone(),
    ));

    let mut intake_tasks = Vec::new();
    let (mut grpc_addr, mut http_addr) = (None, None);
    if let Some((grpc_listener, http_listener)) = otlp_listeners {
        let intake = OtlpIntake::new(spool.clone(), metrics.clone());
        grpc_addr = Some(local(&grpc_listener));
        http_addr = Some(local(&http_listener));
        let service = grpc_service(intake.clone());
        let mut grpc_stop = stop_rx.clone();
        intake_tasks.push(tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
            let result = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = grpc_stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "OTLP/gRPC receiver failed");
            }
        }));
        intake_tasks.push(tokio::spawn(serve_http(
            http_listener,
            http_router(intake),
            stop_rx.clone(),
        )));
    }

    let files = if sources.is_empty() {
        None
    } else {
        let tailer = FileTailer::new(
            sources,
            FileServerOptions::new(config.discovery.rescan_interval, config.spool.max_bytes),
            spool.clone(),
            checkpoints.clone(),
            quarantine.clone(),
            metrics.clone(),
        );
        Some(FileServer::start(tailer)?)
    };

    let trimmer = tokio::spawn(crate::memory::trim_when_idle(
        spool.clone(),
        metrics.clone(),
        stop_rx.clone(),
    ));
    let forwarder = Forwarder::new(
        upstream,
        BatchLimits {
            max_records: config.batch.max_records as usize,
            max_bytes: config.batch.max_bytes,
            max_wait: config.batch.max_wait,
        },
        Backoff::new(config.retry.initial_backoff, config.retry.max_backoff),
        spool,
        checkpoints.clone(),
        quarantine,
        metrics,
    )
    .with_max_in_flight(config.batch.max_in_flight as usize);
    let forwarder = tokio::spawn(forwarder.run(stop_rx));
    tracing::info!(
        api = %api_addr,
        otlp_grpc = grpc_addr.map(tracing::field::display),
        otlp_http = http_addr.map(tracing::field::display),
        collector = %config.collector.endpoint,
        "codestax-agent started"
    );
    Ok(RunningAgent {
        api_addr,
        grpc_addr,
        http_addr,
        stop,
        files,
        intake_tasks,
        forwarder,
        api,
        trimmer,
        checkpoints,
        _lock: lock,
    })
}

impl RunningAgent {
    /// Stops reading files and receiving (requests in flight finish: their records are
    /// spooled and answered), lets a send in flight finish, persists the checkpoints.
    pub async fn shutdown(mut self) {
        if let Some(files) = self.files.take() {
            let _ = tokio::task::spawn_blocking(move || files.stop()).await;
        }
        let _ = self.stop.send(true);
        for task in self.intake_tasks.drain(..) {
            let _ = task.await;
        }
        let _ = self.forwarder.await;
        let _ = self.api.await;
        let _ = self.trimmer.await;
        if let Err(e) = self.checkpoints.persist() {
            // The positions are in the spool too: the next start reads them back from there.
            tracing::error!(error = %e, "cannot persist checkpoints at shutdown");
        }
        tracing::info!("codestax-agent stopped");
    }
}

async fn serve_http(listener: TcpListener, router: axum::Router, mut stop: watch::Receiver<bool>) {
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP listener failed");
    }
}

/// Tailing many files needs a descriptor each: raise the soft limit to the hard one.
#[allow(unsafe_code)]
fn raise_open_files_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                tracing::debug!("cannot raise the open files limit");
            }
        }
    }
}

/// An exclusive lock on the data directory (`agent.lock`), held while the agent runs.
struct DirLock {
    _lock: codestax_storage::DirLock,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock, AgentError> {
        use codestax_storage::LockError;
        match codestax_storage::DirLock::try_acquire(&dir.join("agent.lock")) {
            Ok(lock) => Ok(DirLock { _lock: lock }),
            Err(LockError::Held { .. }) => Err(AgentError::Locked {
                path: dir.to_path_buf(),
            }),
            Err(LockError::Io { path, source }) => Err(AgentError::DataDir { path, source }),
        }
    }
}

/// Starts the agent, runs until `until` resolves, then shuts down: for embedding and tests.
pub async fn run_until(
    config: &AgentConfig,
    until: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let agent = start(config).await?;
    until.await;
    agent.shutdown().await;
    Ok(())
}
