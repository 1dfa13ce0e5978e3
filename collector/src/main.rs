//! `codestax-collector`: loads the configuration, then runs the collector. Wiring only.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use codestax_config::{CollectorConfig, ConfigError, EnvSource};

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
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Directory for the WAL, the index and state files; overrides `data_dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Check FILE (with the environment and --data-dir applied), print the effective settings
    /// and exit: 0 if valid, 2 with every problem listed if not.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
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
    // Next: `codestax_collector::run(config)`, mapping its error to ExitCode::FAILURE.
    drop(config);
    eprintln!("codestax-collector: serving is not implemented yet");
    ExitCode::FAILURE
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
