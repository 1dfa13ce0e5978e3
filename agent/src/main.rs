//! `codestax-agent`: loads the configuration, then runs the agent. Wiring only.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use codestax_config::startup::{self, ConfigArgs, Startup};
use codestax_config::{AgentConfig, EnvSource};

const PROGRAM: &str = "codestax-agent";

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
    let config_args = ConfigArgs {
        config: args.config,
        data_dir: args.data_dir,
        check_config: args.check_config,
    };
    let config = match startup::load::<AgentConfig>(PROGRAM, config_args, &EnvSource::process()) {
        Startup::Run(config) => config,
        Startup::Exit(code) => return code,
    };
    config.log.init_tracing();
    startup::exit_code(PROGRAM, codestax_agent::run(config))
}
