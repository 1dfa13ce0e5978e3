//! `codestax-collector`: loads the configuration, then runs the collector. Wiring only.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use codestax_collector::cluster::{ClusterCommand, run_cluster_command, run_cluster_keys_command};
use codestax_collector::keys::{KeysCommand, run_keys_command};
use codestax_collector::tree::key::public_key;
use codestax_config::startup::{self, ConfigArgs, Startup};
use codestax_config::{CollectorConfig, EnvSource};
use tokio_util::sync::CancellationToken;

const PROGRAM: &str = "codestax-collector";

/// Receives audit records from agents (OTLP/gRPC) and applications (OTLP/HTTP, HTTP API),
/// makes them durable in a write-ahead log, indexes them, and serves search, export and the
/// dashboard.
#[derive(Debug, Parser)]
#[command(
    name = "codestax-collector",
    version,
    after_help = "\
Configuration is layered: built-in defaults < the TOML file (--config) < environment variables
CODESTAX_COLLECTOR__SECTION__KEY (e.g. CODESTAX_COLLECTOR__HTTP__LISTEN=0.0.0.0:8470)
< --data-dir. Unknown keys are errors. See docs/configuration.md and examples/collector.toml.

Exit status: 0 ok, 1 runtime failure, 2 invalid arguments or configuration."
)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage API keys (works whether or not the collector is running; a running collector
    /// accepts a new key at once). `create` prints only the token. In cluster mode the keys are
    /// the cluster's, in PostgreSQL.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Cluster mode: the cluster's state.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Print the public key that verifies this collector's signed tree heads, in the
    /// signed-note verifier form (`<name>+<key id>+<base64 key>`). Generates the key first if
    /// the collector has none yet.
    SigningKey,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match startup::load::<CollectorConfig>(PROGRAM, args.config, &EnvSource::process())
    {
        Startup::Run(config) => config,
        Startup::Exit(code) => return code,
    };
    match args.command {
        Some(Command::Keys(cmd)) => {
            let stdout = std::io::stdout();
            let result = match &config.cluster {
                None => run_keys_command(cmd, &config.data_dir, &mut stdout.lock())
                    .map_err(|e| e.to_string()),
                Some(cluster) => block_on(run_cluster_keys_command(
                    cmd,
                    cluster,
                    &mut stdout.lock(),
                    &mut std::io::stderr().lock(),
                ))
                .and_then(|r| r.map_err(|e| e.to_string())),
            };
            return match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("codestax-collector keys: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Cluster(cmd)) => {
            let stdout = std::io::stdout();
            let result = block_on(run_cluster_command(
                cmd,
                config.cluster.as_ref(),
                &mut stdout.lock(),
            ))
            .and_then(|r| r.map_err(|e| e.to_string()));
            return match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("codestax-collector cluster: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::SigningKey) => {
            return match public_key(&config.signing, &config.data_dir) {
                Ok(key) => {
                    println!("{key}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("codestax-collector signing-key: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        None => {}
    }
    config.log.init_tracing();
    startup::exit_code(PROGRAM, run(config))
}

/// Runs a one-off command's future on a small runtime of its own.
fn block_on<T>(future: impl std::future::Future<Output = T>) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    Ok(runtime.block_on(future))
}

/// Runs the collector on its own runtime until SIGINT or SIGTERM.
fn run(config: CollectorConfig) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                codestax_config::shutdown_signal().await;
                tracing::info!("stopping: finishing in-flight requests");
                shutdown.cancel();
            }
        });
        codestax_collector::run(config, shutdown)
            .await
            .map_err(|e| e.to_string())
    })
}
