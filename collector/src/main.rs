//! `codestax-collector`: loads the configuration, then runs the collector. Wiring only.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use codestax_collector::keys::{KeysCommand, run_keys_command};
use codestax_config::{CollectorConfig, ConfigError, EnvSource};
use tokio_util::sync::CancellationToken;

/// Exit status for an invalid configuration (also clap's status for bad arguments).
const EXIT_CONFIG: u8 = 2;

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
    /// TOML configuration file (must exist); without it, defaults and the environment are used.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// Directory for the WAL, the index and state files; overrides `data_dir`.
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,

    /// Check FILE (with the environment and --data-dir applied), print the effective settings
    /// and exit: 0 if valid, 2 with every problem listed if not.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage API keys (works whether or not the collector is running; a running collector
    /// accepts a new key within a second). `create` prints only the token.
    #[command(subcommand)]
    Keys(KeysCommand),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let env = EnvSource::process();

    if let Some(file) = &args.check_config {
        return match load(Some(file), args.data_dir, &env) {
            Ok(config) => {
                println!("{}: configuration is valid", file.display());
                print!("{}", config.summary());
                ExitCode::SUCCESS
            }
            Err(err) => report(&err),
        };
    }

    let config = match load(args.config.as_deref(), args.data_dir, &env) {
        Ok(config) => config,
        Err(err) => return report(&err),
    };
    if let Some(Command::Keys(cmd)) = args.command {
        let stdout = std::io::stdout();
        return match run_keys_command(cmd, &config.data_dir, &mut stdout.lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("codestax-collector keys: {e}");
                ExitCode::FAILURE
            }
        };
    }
    config.log.init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("codestax-collector: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        codestax_collector::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("codestax-collector: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `token` on SIGTERM or Ctrl-C.
async fn stop_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("stopping: finishing in-flight requests");
    token.cancel();
}

fn load(
    file: Option<&Path>,
    data_dir: Option<PathBuf>,
    env: &EnvSource,
) -> Result<CollectorConfig, ConfigError> {
    let config = CollectorConfig::load(file, env)?;
    Ok(match data_dir {
        Some(dir) => config.with_data_dir(dir),
        None => config,
    })
}

/// Prints every configuration problem, one per line, and returns the config exit status.
fn report(err: &ConfigError) -> ExitCode {
    for line in err.to_string().lines() {
        eprintln!("codestax-collector: {line}");
    }
    ExitCode::from(EXIT_CONFIG)
}
