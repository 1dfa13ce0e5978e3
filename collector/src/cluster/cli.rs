//! `codestax-collector cluster ...`: commands about the cluster as a whole.

use std::io::Write;

use codestax_config::ClusterConfig;

use super::error::MetastoreError;
use super::status::{cluster_status, write_status};

/// The `cluster` subcommands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum ClusterCommand {
    /// Nodes (heartbeat age) and shards (owner, epoch, lease expiry, snapshot age, consumer lag)
    /// as the metastore and NATS see them now.
    Status {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

/// Why a `cluster` command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterCliError {
    #[error("the configuration has no [cluster] section: this collector is a single node")]
    NotClustered,
    #[error(transparent)]
    Metastore(#[from] MetastoreError),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs a `cluster` subcommand for the node configured by `config`.
pub async fn run_cluster_command(
    cmd: ClusterCommand,
    config: Option<&ClusterConfig>,
    out: &mut impl Write,
) -> Result<(), ClusterCliError> {
    let config = config.ok_or(ClusterCliError::NotClustered)?;
    match cmd {
        ClusterCommand::Status { json } => {
            let status = cluster_status(config).await?;
            write_status(&status, json, out)?;
        }
    }
    Ok(())
}
