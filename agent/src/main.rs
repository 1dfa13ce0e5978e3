//! `codestax-agent`: loads the configuration, then runs the agent. Wiring only.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use codestax_config::{AgentConfig, ConfigError, EnvSource};

/// Exit status for an invalid configuration (also clap's status for bad arguments).
const EXIT_CONFIG: u8 = 2;

/// Sidecar that tails audit emit files and receives OTLP logs, spools records durably on disk
/// and forwards them to the collector, advancing file checkpoints only once delivered.
#[derive(Debug, Parser)]
#[command(
    name = "codestax-agent",
    version,
    after_help = "\
Configuration is layered: built-in defaults < the TOML file (--config) < environment variables
CODESTAX_AGENT__SECTION__KEY (e.g. CODESTAX_AGENT__COLLECTOR__TOKEN=...)
< --data-dir. Unknown keys are errors. See docs/configuration.md and examples/agent.toml.

Exit status: 0 ok, 1 runtime failure, 2 invalid arguments or configuration."
)]
struct Args {
    /// TOML configuration file (must exist); without it, defaults and the environment are used.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Directory for checkpoints, the spool and quarantined lines; overrides `data_dir`.
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
    config.log.init_tracing();
    match codestax_agent::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        // Every error names its file, key or address and includes its cause.
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("codestax-agent: {err}");
            ExitCode::FAILURE
        }
    }
}

fn load(
    file: Option<&Path>,
    data_dir: Option<PathBuf>,
    env: &EnvSource,
) -> Result<AgentConfig, ConfigError> {
    let config = AgentConfig::load(file, env)?;
    Ok(match data_dir {
        Some(dir) => config.with_data_dir(dir),
        None => config,
    })
}

/// Prints every configuration problem, one per line, and returns the config exit status.
fn report(err: &ConfigError) -> ExitCode {
    for line in err.to_string().lines() {
        eprintln!("codestax-agent: {line}");
    }
    ExitCode::from(EXIT_CONFIG)
}
