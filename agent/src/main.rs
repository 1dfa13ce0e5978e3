//! `codestax-agent`: loads the configuration, then runs the agent. Wiring only.

#![forbid(unsafe_code)]

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
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match startup::load::<AgentConfig>(PROGRAM, args.config, &EnvSource::process()) {
        Startup::Run(config) => config,
        Startup::Exit(code) => return code,
    };
    config.log.init_tracing();
    startup::exit_code(PROGRAM, codestax_agent::run(config))
}
