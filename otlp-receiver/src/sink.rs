//! What a receiver hands the decoded logs to, and what it is told back.

use std::fmt::Display;
use std::future::Future;

use crate::{Bearer, Logs, Refusal};

/// Rejections listed in `error_message`; past these they are only counted, so an answer never
/// costs more than a fixed size whatever the batch.
pub const MAX_LISTED_REJECTIONS: usize = 50;

/// Which transport a request came over (for the sink's metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    Grpc,
}

/// The receiver of decoded OTLP logs: the agent's spool, the collector's ingest pipeline.
pub trait LogsSink: Clone + Send + Sync + 'static {
    /// Who sent a request, as [`LogsSink::authorize`] found.
    type Sender: Send + 'static;
    /// A request's log records converted, ready for [`LogsSink::submit`].
    type Batch: Send + 'static;

    /// Decides from the request's credentials whether it may export at all; runs before
    /// anything of the request is read.
    fn authorize(&self, bearer: Bearer<'_>) -> Result<Self::Sender, Refusal>;

    /// Converts every log record of a request ([`Logs::for_each`], with the sink's limit on one
    /// encoded LogRecord), rejecting bad ones one by one; refused only when the request's
    /// framing is broken. CPU work: the receiver calls it off the async runtime unless the
    /// request is small.
    fn convert(&self, sender: &Self::Sender, logs: Logs<'_>) -> Result<Self::Batch, Refusal>;

    /// Takes a converted batch; resolves once the accepted records are durable.
    fn submit(
        &self,
        sender: Self::Sender,
        batch: Self::Batch,
        transport: Transport,
    ) -> impl Future<Output = Result<Exported, Refusal>> + Send;
}

/// What became of a submitted batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exported {
    /// Records taken (durable now).
    pub accepted: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Why, from [`rejection_summary`].
    pub rejections: String,
}

/// The `error_message` of a partial success: `record <position>: <reason>` per listed
/// rejection (positions 1-based across the request), then `... and N more`.
pub fn rejection_summary<D: Display>(
    listed: impl IntoIterator<Item = (usize, D)>,
    unlisted: u64,
) -> String {
    let mut lines: Vec<String> = listed
        .into_iter()
        .map(|(position, reason)| format!("record {position}: {reason}"))
        .collect();
    if unlisted > 0 {
        lines.push(format!("... and {unlisted} more"));
    }
    lines.join("\n")
}
