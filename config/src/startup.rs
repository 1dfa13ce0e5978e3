//! The start-up path both binaries share: load the configuration the command line names (file,
//! environment, then `--data-dir`), answer `--check-config`, and turn a configuration problem or
//! a runtime error into the documented exit status.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::{AgentConfig, CollectorConfig, ConfigError, EnvSource};

/// Exit status for an invalid configuration (also clap's status for bad arguments).
pub const EXIT_CONFIG: u8 = 2;

/// A binary's configuration: loaded in layers, `--data-dir` applied last, summarised for
/// `--check-config`.
pub trait BinaryConfig: Sized {
    /// Defaults < `file` (must exist when given) < the component's environment variables.
    fn load(file: Option<&Path>, env: &EnvSource) -> Result<Self, ConfigError>;
    /// Replaces `data_dir`.
    fn with_data_dir(self, data_dir: PathBuf) -> Self;
    /// Effective settings, one `key  value` line each.
    fn summary(&self) -> String;
}

impl BinaryConfig for AgentConfig {
    fn load(file: Option<&Path>, env: &EnvSource) -> Result<Self, ConfigError> {
        AgentConfig::load(file, env)
    }
    fn with_data_dir(self, data_dir: PathBuf) -> Self {
        AgentConfig::with_data_dir(self, data_dir)
    }
    fn summary(&self) -> String {
        AgentConfig::summary(self)
    }
}

impl BinaryConfig for CollectorConfig {
    fn load(file: Option<&Path>, env: &EnvSource) -> Result<Self, ConfigError> {
        CollectorConfig::load(file, env)
    }
    fn with_data_dir(self, data_dir: PathBuf) -> Self {
        CollectorConfig::with_data_dir(self, data_dir)
    }
    fn summary(&self) -> String {
        CollectorConfig::summary(self)
    }
}

/// The configuration flags of a binary's command line (`#[command(flatten)]` them into its
/// arguments), as given.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML configuration file (must exist); without it, defaults and the environment are used.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// The data directory (the agent's spool, checkpoints and quarantine; the collector's WAL,
    /// index and state files); overrides `data_dir`.
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// Check FILE (with the environment and --data-dir applied), print the effective settings
    /// and exit: 0 if valid, 2 with every problem listed if not.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub check_config: Option<PathBuf>,
}

/// What the binary does after loading its configuration.
#[derive(Debug)]
pub enum Startup<T> {
    /// Run with this configuration.
    Run(T),
    /// Exit now with this status (`--check-config` answered, or the configuration is invalid;
    /// what to say has been printed).
    Exit(ExitCode),
}

/// Loads `program`'s configuration as `args` say. `--check-config` prints whether the file is
/// valid and the effective settings (stdout) and exits 0; a problem prints every line of the
/// error as `program: line` (stderr) and exits [`EXIT_CONFIG`].
pub fn load<T: BinaryConfig>(program: &str, args: ConfigArgs, env: &EnvSource) -> Startup<T> {
    let file = args.check_config.as_deref().or(args.config.as_deref());
    let config = T::load(file, env).map(|config| match args.data_dir {
        Some(dir) => config.with_data_dir(dir),
        None => config,
    });
    match (config, &args.check_config) {
        (Err(err), _) => {
            for line in err.to_string().lines() {
                eprintln!("{program}: {line}");
            }
            Startup::Exit(ExitCode::from(EXIT_CONFIG))
        }
        (Ok(config), Some(checked)) => {
            println!("{}: configuration is valid", checked.display());
            print!("{}", config.summary());
            Startup::Exit(ExitCode::SUCCESS)
        }
        (Ok(config), None) => Startup::Run(config),
    }
}

/// The exit status of a run: 0, or 1 after printing the error (which names its file, key or
/// address and includes its cause) as `program: error` on stderr and to the log.
pub fn exit_code<E: Display>(program: &str, result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("{program}: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("agent.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn data_dir_wins_over_file_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "data_dir = \"/from/file\"\n");
        let env = EnvSource::vars([("CODESTAX_AGENT__DATA_DIR", "/from/env")]);
        let args = ConfigArgs {
            config: Some(file),
            data_dir: Some("/from/flag".into()),
            check_config: None,
        };
        match load::<AgentConfig>("codestax-agent", args, &env) {
            Startup::Run(config) => assert_eq!(config.data_dir, PathBuf::from("/from/flag")),
            Startup::Exit(code) => panic!("exit {code:?}"),
        }
    }

    #[test]
    fn check_config_and_problems_exit() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(dir.path(), "data_dir = \"/d\"\n");
        let args = ConfigArgs {
            check_config: Some(good),
            ..ConfigArgs::default()
        };
        assert!(matches!(
            load::<CollectorConfig>("codestax-collector", args, &EnvSource::empty()),
            Startup::Exit(code) if code == ExitCode::SUCCESS
        ));
        let args = ConfigArgs {
            config: Some(dir.path().join("missing.toml")),
            ..ConfigArgs::default()
        };
        assert!(matches!(
            load::<CollectorConfig>("codestax-collector", args, &EnvSource::empty()),
            Startup::Exit(code) if code == ExitCode::from(EXIT_CONFIG)
        ));
    }
}
